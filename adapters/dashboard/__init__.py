"""The live dashboard (``[live] dashboard = true``): a page served by the daemon, beside
its decision loop, showing the trading state and who holds it, positions and PnL, working
orders, fills, the latest signals with their top contributions, the models' monitor
figures and alarms and the feed's health, pushed by server-sent events; and the
operator's actions (kill, reduce-only, flatten, resume) behind a token, sent down the
signed command path.

Modules, each importing only the ones above it:

- ``access``: the operator token (read, compared in constant time).
- ``board``: the page's document, built from the daemon's objects (no I/O).
- ``page``: the self-contained HTML page and its Content Security Policy.
- ``server``: the aiohttp server: routes, pushes, refusals counted (``Dashboard``).
- ``live``: the daemon's dashboard: sources, sink, actions as signed commands
  (``LiveDashboard``).
"""
