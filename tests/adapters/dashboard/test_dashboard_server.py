"""The dashboard's server on its own (a real aiohttp server on a free port, a document of
the test's making): who may act, hostile requests refused and counted, pushes coalesced.
The token's comparison is a hypothesis property."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import string
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st

from adapters.dashboard.access import MIN_TOKEN_CHARS, check_authorization, read_token
from adapters.dashboard.page import CONTENT_SECURITY_POLICY, PAGE
from adapters.dashboard.server import MAX_BODY_BYTES, Dashboard
from engine.errors import AdapterError, ConfigError

TOKEN = "t0ken-for-the-tests-0123456789"


class Doc:
    """A document the test changes; counts how often the server built it."""

    def __init__(self) -> None:
        self.value = 0
        self.builds = 0

    def build(self) -> dict[str, Any]:
        self.builds += 1
        return {"value": self.value}


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Dashboard, Doc, list[tuple[str, str]]]]:
    doc = Doc()
    submitted: list[tuple[str, str]] = []

    def submit(action: str, reason: str) -> str | None:
        submitted.append((action, reason))
        return None

    board = Dashboard(doc.build, _encode, port=0, token=TOKEN, submit=submit, interval_s=0.1)  # type: ignore[arg-type]
    await board.start()
    try:
        yield board, doc, submitted
    finally:
        await board.close()


async def _post(
    url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, {"text": text}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.asyncio
async def test_dashboard_action_token_missing_or_wrong_refused_right_one_submits(
    served: tuple[Dashboard, Doc, list[tuple[str, str]]],
) -> None:
    board, _, submitted = served
    url = board.url + "api/actions/kill"
    assert (await _post(url))[0] == 401
    assert (await _post(url, headers=_bearer(TOKEN + "x")))[0] == 401
    assert (await _post(url, headers={"Authorization": f"Basic {TOKEN}"}))[0] == 401
    assert submitted == []
    status, body = await _post(url, b'{"reason": "test kill"}', _bearer(TOKEN))
    assert status == 202, body
    assert submitted == [("kill", "test kill")]
    assert board.counters["refused_unauthenticated"] == 2
    assert board.counters["refused_bad_token"] == 1
    assert board.counters["accepted_kill"] == 1


@pytest.mark.asyncio
async def test_dashboard_without_token_is_read_only_every_action_403() -> None:
    submitted: list[str] = []
    board = Dashboard(lambda: {}, _encode, port=0, token=None,
                      submit=lambda a, r: submitted.append(a))  # type: ignore[arg-type,func-returns-value]  # fmt: skip
    await board.start()
    try:
        for action in ("kill", "reduce_only", "flatten", "resume"):
            status, body = await _post(board.url + f"api/actions/{action}", b"", _bearer(TOKEN))
            assert status == 403 and "read-only" in body["message"]
        assert submitted == [] and board.counters["refused_read_only"] == 4
    finally:
        await board.close()


@pytest.mark.asyncio
async def test_dashboard_hostile_requests_refused_counted_and_it_serves_on(
    served: tuple[Dashboard, Doc, list[tuple[str, str]]],
) -> None:
    board, _, submitted = served
    base = board.url
    auth = _bearer(TOKEN)
    cases = [
        ("POST", base + "api/actions/kill", b"x" * (MAX_BODY_BYTES + 1), auth, 413),
        ("POST", base + "api/actions/kill", b"{not json", auth, 400),
        ("POST", base + "api/actions/kill", b'{"reason": 5}', auth, 400),
        ("POST", base + "api/actions/kill", b'{"reason": "x", "action": "y"}', auth, 400),
        ("POST", base + "api/actions/kill", b'["reason"]', auth, 400),
        ("POST", base + "api/actions/promote", b"", auth, 404),
        ("GET", base + "api/actions/kill", b"", auth, 405),
        ("DELETE", base, b"", {}, 405),
        ("GET", base + "../../etc/passwd", b"", {}, 404),
        ("GET", base + "nothing-here", b"", {}, 404),
        ("GET", base + "api/state", b"", {"Host": f"evil.example:{board.port}"}, 421),
        ("GET", base + "events", b"", {"Host": "rebound.example"}, 421),
    ]
    async with aiohttp.ClientSession() as http:
        for method, url, body, headers, expected in cases:
            async with http.request(method, url, data=body, headers=headers) as r:
                assert r.status == expected, (method, url, body[:20])
        # a malformed request line, on a raw socket
        reader, writer = await asyncio.open_connection(board.host, board.port)
        writer.write(b"\x00\xffNOT HTTP\r\n\r\n")
        await writer.drain()
        assert b"400" in (await reader.read(200))
        writer.close()
        async with http.get(base, headers={"Host": f"localhost:{board.port + 1}"}) as r:
            assert r.status == 200  # a tunnel's local port
        async with http.get(base) as r:
            assert r.status == 200 and (await r.read()) == PAGE
            assert r.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert r.headers["X-Frame-Options"] == "DENY"
    assert submitted == []
    refused = {k: v for k, v in board.counters.items() if k.startswith("refused_")}
    assert refused == {"refused_too_large": 1, "refused_bad_body": 4, "refused_unknown_action": 1,
                       "refused_wrong_method": 2, "refused_not_found": 2,
                       "refused_bad_host": 2}  # fmt: skip


async def _read_events(url: str, out: list[dict[str, Any]], ready: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        async for line in r.content:
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
                ready.set()


@pytest.mark.asyncio
async def test_dashboard_events_push_changes_coalesced_to_the_interval(
    served: tuple[Dashboard, Doc, list[tuple[str, str]]],
) -> None:
    board, doc, _ = served
    seen: list[dict[str, Any]] = []
    ready = asyncio.Event()
    reader = asyncio.create_task(_read_events(board.url + "events", seen, ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        assert seen == [{"value": 0}] and board.clients == 1
        # a burst: 3,000 changes over ~0.5 s (a tick every ~170 us)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(3000):
            doc.value = i + 1
            board.changed()
            if i % 100 == 0:
                await asyncio.sleep(0.017)
        elapsed = loop.time() - start
        await asyncio.sleep(0.3)
        assert seen[-1] == {"value": 3000}  # the last state always arrives
        pushes = len(seen) - 1
        assert 1 <= pushes <= elapsed / board.interval_s + 3, (pushes, elapsed)
        assert doc.builds <= pushes + 3  # built only for a push, not per change
        # nothing changes: nothing is sent
        board.changed()
        await asyncio.sleep(0.25)
        assert len(seen) == pushes + 1
    finally:
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader


@pytest.mark.asyncio
async def test_dashboard_builds_nothing_while_no_page_is_open(
    served: tuple[Dashboard, Doc, list[tuple[str, str]]],
) -> None:
    board, doc, _ = served
    for _ in range(100):
        board.changed()
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.15)
    assert doc.builds == 0 and board.counters["pushes"] == 0


@pytest.mark.asyncio
async def test_dashboard_port_taken_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        board = Dashboard(lambda: {}, _encode, port=port)
        with pytest.raises(AdapterError, match=f"cannot listen on 127.0.0.1:{port}"):
            await board.start()


def test_dashboard_page_is_self_contained_and_its_csp_names_its_inline_code() -> None:
    text = PAGE.decode()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert "http://" not in text and "https://" not in text
    for tag in ("script", "style"):
        body = re.search(f"<{tag}>(.*?)</{tag}>", text, re.S)
        assert body is not None
        digest = base64.b64encode(hashlib.sha256(body.group(1).encode()).digest()).decode()
        assert f"'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    assert "innerHTML" not in text  # values go in as text, never as markup


def test_dashboard_read_token_short_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_DASH_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        read_token("TL_DASH_TOKEN")
    monkeypatch.setenv("TL_DASH_TOKEN", "")
    assert read_token("TL_DASH_TOKEN") is None
    monkeypatch.setenv("TL_DASH_TOKEN", TOKEN)
    assert read_token("TL_DASH_TOKEN") == TOKEN


# printable, no spaces (a token is one word), and a few non-ASCII letters
_ALPHABET = string.ascii_letters + string.digits + string.punctuation + "éß€中"
_TOKENS = st.text(alphabet=_ALPHABET, min_size=MIN_TOKEN_CHARS, max_size=40)


@st.composite
def _presented(draw: st.DrawFn) -> tuple[str, str]:
    """A token and what a client presents: the token, a prefix, an extension, one
    character changed, or anything at all."""
    token = draw(_TOKENS)
    kind = draw(st.sampled_from(["same", "prefix", "longer", "changed", "any"]))
    if kind == "same":
        given_ = token
    elif kind == "prefix":
        given_ = token[: draw(st.integers(0, len(token) - 1))]
    elif kind == "longer":
        given_ = token + draw(st.text(alphabet=_ALPHABET, min_size=1, max_size=5))
    elif kind == "changed":
        i = draw(st.integers(0, len(token) - 1))
        c = draw(st.sampled_from([c for c in _ALPHABET + " \x00\udcff" if c != token[i]]))
        given_ = token[:i] + c + token[i + 1 :]
    else:
        given_ = draw(st.text(max_size=60))
    return token, given_


@given(_presented(), st.sampled_from(["Bearer ", "bearer ", "BEARER  "]))
def test_dashboard_token_accepted_iff_it_is_the_token(case: tuple[str, str], scheme: str) -> None:
    """Property: an action passes iff the header carries exactly the token (the scheme's
    case and surrounding spaces aside); never an exception, whatever the header holds.
    Mutation tried: ``expected.startswith(presented)`` in place of ``compare_digest``
    (a prefix of the token passes): it fails at once."""
    token, given_ = case
    refusal = check_authorization(scheme + given_, token)
    assert (refusal is None) == (given_.strip() == token)
    assert check_authorization(given_, None) == "read_only"


@pytest.mark.asyncio
async def test_dashboard_document_that_fails_is_counted_and_the_server_serves_on() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug in the document")

    board = Dashboard(broken, _encode, port=0)
    await board.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(board.url + "api/state") as r:
                assert r.status == 500
            async with http.get(board.url + "events") as r:
                assert r.status == 200  # the stream opens; it has nothing to show yet
                for _ in range(200):
                    if board.counters["error_document_failed"] == 2:
                        break
                    await asyncio.sleep(0.01)
            async with http.get(board.url) as r:
                assert r.status == 200
        assert board.counters["error_document_failed"] == 2
    finally:
        await board.close()
