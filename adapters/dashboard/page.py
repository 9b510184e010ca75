"""The dashboard's page: one self-contained HTML document (inline CSS and JS, no CDN, no
external request but its own ``/events`` stream and ``/api/actions/*``).

Every value from the daemon is put on the page with ``textContent``, never parsed as
HTML: an instrument name or an alarm message cannot inject markup. The Content Security
Policy allows this page's own inline script and style only, by their SHA-256
(``CONTENT_SECURITY_POLICY``), and no frame may embed it (the buttons cannot be
clickjacked).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

_STYLE: Final = """
body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}
header{display:flex;gap:16px;align-items:center;padding:10px 16px;background:#1b1f24;color:#fff}
header h1{font-size:16px;margin:0}
#state{padding:3px 10px;border-radius:4px;font-weight:700;background:#666}
#state.ACTIVE{background:#1a7f37}#state.REDUCE_ONLY{background:#b35900}#state.HALTED{background:#cf222e}
#conn{margin-left:auto;font-size:12px}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px;padding:12px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;overflow:auto}
h2{font-size:13px;margin:4px 0 8px;text-transform:uppercase;letter-spacing:.04em;color:#57606a}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:2px 6px;border-bottom:1px solid #eaeef2;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.empty{color:#8c959f;font-style:italic}
.critical{color:#cf222e}.warning{color:#b35900}
#actions button{margin:4px 6px 4px 0;padding:4px 12px}
#actions input{width:260px}
#result{margin-top:6px;font-weight:600}
"""

_SCRIPT: Final = """
"use strict";
const $ = (id) => document.getElementById(id);
const fmt = (v, d) => (v === null || v === undefined) ? "" :
  (typeof v === "number" ? v.toFixed(d === undefined ? 4 : d) : String(v));
function table(id, cols, rows) {
  const el = $(id); el.replaceChildren();
  if (!rows.length) { const p = document.createElement("p"); p.className = "empty";
    p.textContent = "none"; el.append(p); return; }
  const t = document.createElement("table"), h = t.insertRow();
  for (const [label] of cols) { const th = document.createElement("th");
    th.textContent = label; h.append(th); }
  for (const r of rows) { const tr = t.insertRow(); tr.dataset.row = id;
    for (const [, get, cls] of cols) { const td = tr.insertCell();
      const v = get(r); td.textContent = fmt(v); if (typeof v === "number") td.className = "num";
      if (cls) td.classList.add(cls(r)); } }
  el.append(t);
}
function contributions(s) {
  return s.contributions.map(([n, v]) => n + " " + (v >= 0 ? "+" : "") + v.toFixed(4)).join(", ");
}
function render(d) {
  $("node").textContent = d.node + " (" + d.mode + ")";
  const st = $("state"); st.textContent = d.state; st.className = d.state;
  const holders = Object.entries(d.claims).map(([k, v]) => k + "=" + v).join(", ");
  $("held").textContent = holders ? "held by " + holders : "no restriction";
  $("time").textContent = d.time;
  $("pnl").textContent = "PnL " + fmt(d.pnl, 2);
  table("positions", [["instrument", r => r.symbol], ["position", r => r.position],
    ["PnL", r => r.pnl], ["last quote", r => r.last_quote], ["age s", r => r.quote_age_s]],
    d.instruments);
  table("orders", [["time", r => r.time], ["id", r => r.client_order_id],
    ["instrument", r => r.instrument], ["side", r => r.side], ["qty", r => r.qty],
    ["filled", r => r.filled], ["type", r => r.type], ["limit", r => r.limit_price],
    ["status", r => r.status]], d.orders);
  $("orders_total").textContent = d.orders.length < d.orders_total ?
    "(newest " + d.orders.length + " of " + d.orders_total + ")" : "";
  table("fills", [["time", r => r.time], ["instrument", r => r.instrument],
    ["side", r => r.side], ["qty", r => r.qty], ["price", r => r.price], ["fee", r => r.fee],
    ["order", r => r.client_order_id]], d.fills);
  table("signals", [["time", r => r.time], ["instrument", r => r.instrument],
    ["score", r => r.score], ["zone", r => r.zone],
    ["top contributions", r => contributions(r)]], d.signals);
  table("models", [["role", r => r.role], ["model", r => r.model],
    ["version", r => r.version.slice(0, 12)], ["stage", r => r.stage], ["IC", r => r.ic],
    ["hit ratio", r => r.hit_ratio], ["scored", r => r.scored],
    ["alarms", r => Object.entries(r.alarms).filter(([, n]) => n).map(([k, n]) => k + " " + n)
      .join(", ")]], d.models);
  table("alarms", [["time", r => r.time], ["source", r => r.source],
    ["severity", r => r.severity, r => r.severity], ["message", r => r.message]], d.alarms);
  table("events", [["time", r => r.time], ["what", r => r.what], ["detail", r => r.detail]],
    d.states.map(s => ({time: s.time, what: "state " + s.state, detail: s.reason}))
      .concat(d.commands.map(c => ({time: c.time, what: "command " + c.action,
        detail: c.issuer + (c.reason ? ": " + c.reason : "")})))
      .concat(d.refusals.map(r => ({time: r.time, what: "refused " + r.client_order_id,
        detail: r.reason})))
      .sort((a, b) => a.time < b.time ? 1 : -1).slice(0, 25));
  const f = d.feed;
  const counts = (o) => Object.entries(o).map(([k, n]) => k + " " + n).join(", ") || "none";
  $("feed").textContent = (f.connected ? "broker connected" : "broker NOT connected") +
    (f.lost ? "; feed LOST" : "; feed ok") + ". Messages in: " + counts(f.messages_in) +
    ". Refused: " + counts(f.refused) +
    ". Unauthenticated commands: " + f.commands_unauthenticated + ".";
  const a = $("actions");
  if (d.actions.enabled) { a.hidden = false; $("readonly").hidden = true; }
  else { a.hidden = true; $("readonly").hidden = false;
    $("readonly").textContent = "read-only: " + d.actions.why; }
}
let source;
function connect() {
  source = new EventSource("events");
  source.onopen = () => { $("conn").textContent = "live"; };
  source.onmessage = (m) => { render(JSON.parse(m.data)); $("conn").textContent = "live"; };
  source.onerror = () => { $("conn").textContent = "reconnecting..."; };
}
async function act(action) {
  const token = $("token").value;
  $("result").textContent = action + "...";
  const headers = {"Content-Type": "application/json"};
  if (token) headers["Authorization"] = "Bearer " + token;
  try {
    const r = await fetch("api/actions/" + action, {method: "POST", headers,
      body: JSON.stringify({reason: $("reason").value})});
    const body = await r.json().catch(() => ({}));
    $("result").textContent = action + ": " + r.status + " " + (body.message || r.statusText);
  } catch (e) { $("result").textContent = action + ": " + e; }
}
for (const b of document.querySelectorAll("button[data-action]"))
  b.addEventListener("click", () => act(b.dataset.action));
connect();
"""

_BODY: Final = """
<header><h1>tradeloop</h1><span id="node"></span><span id="state">?</span>
<span id="held"></span><span id="pnl"></span><span id="time"></span>
<span id="conn">connecting...</span></header>
<main>
<section><h2>Positions and PnL</h2><div id="positions"></div></section>
<section><h2>Working orders <span id="orders_total"></span></h2><div id="orders"></div></section>
<section><h2>Fills</h2><div id="fills"></div></section>
<section><h2>Signals and their top contributions</h2><div id="signals"></div></section>
<section><h2>Models</h2><div id="models"></div></section>
<section><h2>Alarms</h2><div id="alarms"></div></section>
<section><h2>Feed</h2><div id="feed"></div></section>
<section><h2>State changes, commands, refusals</h2><div id="events"></div></section>
<section><h2>Operator</h2><p id="readonly">read-only</p>
<div id="actions" hidden>
<label>token <input id="token" type="password" autocomplete="off"></label>
<label>reason <input id="reason" type="text" maxlength="200" value="from the dashboard"></label><br>
<button data-action="kill">kill</button><button data-action="reduce_only">reduce-only</button>
<button data-action="flatten">flatten</button><button data-action="resume">resume</button>
<div id="result"></div></div></section>
</main>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE: Final = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    f"<title>tradeloop dashboard</title><style>{_STYLE}</style></head><body>{_BODY}"
    f"<script>{_SCRIPT}</script></body></html>"
).encode()
"""The page's bytes, the same for every request."""

CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""Only this page's inline script and style run; it talks to its own origin only."""

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE"]
