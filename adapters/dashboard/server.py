"""The dashboard's HTTP server (aiohttp), on the daemon's own event loop beside the
decision loop.

Routes:

=======================  ======  ==========================================================
path                     method  what
=======================  ======  ==========================================================
``/``                    GET     the page (``adapters.dashboard.page``)
``/api/state``           GET     the document now (JSON)
``/events``              GET     server-sent events: the document at each change
``/api/actions/{name}``  POST    ``kill``, ``reduce_only``, ``flatten``, ``resume`` (token)
=======================  ======  ==========================================================

The loop is never slowed by the page: the daemon calls ``Dashboard.changed`` after each
turn (setting a flag, nothing more); one publisher task builds the document only while a
page is open, at most once per ``interval_s``, whatever the tick rate (a burst of ticks
is one push), and only sends it when it differs from the last one. Each open page has a
one-slot queue holding the newest document: a slow browser skips documents, it never
holds memory or the loop.

On a loopback address the server answers only requests whose ``Host`` is a loopback name
(any port, so an SSH tunnel works): another site's page whose name was made to resolve
to 127.0.0.1 (DNS rebinding) is refused with 421.

Every refused request is counted by reason (``counters``: ``refused_<reason>``): a
malformed or oversized body, a wrong method, an unknown path, a missing or wrong token,
an action on a read-only page, too many open pages. Nothing a client sends can stop the
daemon: a handler's own exception is a counted 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final, get_args

from aiohttp import web

from adapters.dashboard.access import check_authorization
from adapters.dashboard.page import CONTENT_SECURITY_POLICY, PAGE
from engine.errors import AdapterError
from engine.events import CommandAction

log = logging.getLogger("tradeloop.dashboard")

ACTIONS: Final = ("kill", "reduce_only", "flatten", "resume")
"""What an operator may do from the page (model switches stay with ``tradeloop models``)."""
assert set(ACTIONS) <= set(get_args(CommandAction))

# an action's body is {"reason": "..."}: anything bigger is not an action
MAX_BODY_BYTES: Final = 4096
MAX_REASON_CHARS: Final = 200
# open pages at once; more are refused (each holds a connection and a queue slot)
MAX_CLIENTS: Final = 32
# a comment line this often keeps proxies and browsers from closing an idle stream
_KEEPALIVE_S: Final = 15.0
# names a browser uses for this machine: on a loopback address any other Host header is a
# page of another site resolved to 127.0.0.1 (DNS rebinding) reading positions and PnL
_LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
_STATUS_REFUSAL: Final = {"read_only": 403, "unauthenticated": 401, "bad_token": 401}
_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

ActionSubmit = Callable[[CommandAction, str], str | None]
"""Sends an operator action down the command path: None if the command entered it, else
why not (no broker session, no command key, refused by the signature or freshness check)."""


class Dashboard:
    """The dashboard of one daemon: ``start`` serves it, ``close`` stops it.

    Args:
        build: the document now (``adapters.dashboard.board.build_document`` bound to the
            daemon); called only while a page is open.
        encode: the document's bytes (one line).
        host: address to bind (``[live] dashboard_host``; loopback by default).
        port: port to bind (0: a free one, see ``port`` after ``start``).
        token: the operator token (None: read-only).
        submit: where an accepted action goes (None until the broker session is up).
        poll: blocking work before a push (the explanations file's tail), run off the loop.
        interval_s: the shortest time between two pushes.
        on_count: called with each refusal's and action's counter key as it is counted
            (``refused_<reason>``, ``accepted_<action>``: Prometheus).
    """

    def __init__(
        self,
        build: Callable[[], dict[str, Any]],
        encode: Callable[[dict[str, Any]], bytes],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        submit: ActionSubmit | None = None,
        poll: Callable[[], object] | None = None,
        interval_s: float = 0.1,
        on_count: Callable[[str], None] | None = None,
    ) -> None:
        self.build = build
        self.encode = encode
        self.host = host
        self.port = port
        self.token = token
        self.submit = submit
        self.poll = poll
        self.interval_s = interval_s
        self.on_count = on_count
        self.counters: Counter[str] = Counter()
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._changed = asyncio.Event()
        self._last: bytes = b""
        self._runner: web.AppRunner | None = None
        self._publisher: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The page's address (after ``start``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def clients(self) -> int:
        """Pages open now."""
        return len(self._clients)

    def changed(self) -> None:
        """Something the page shows may have changed (cheap: sets a flag)."""
        if not self._changed.is_set():
            self._changed.set()

    async def start(self) -> str:
        """Bind and serve; returns the page's URL.

        Raises:
            AdapterError: the address cannot be bound.
        """
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/events", self._events)
        app.router.add_post("/api/actions/{name}", self._action)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise AdapterError(
                f"dashboard: cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); "
                "set [live] dashboard_port to a free port, or 0 for any"
            ) from exc
        self._runner = runner
        addresses = runner.addresses  # the bound (host, port, ...) of each socket
        if addresses:
            self.port = int(addresses[0][1])
        self._publisher = asyncio.create_task(self._publish(), name="dashboard-publisher")
        return self.url

    async def close(self) -> None:
        """Close every stream and stop serving."""
        for queue in list(self._clients):
            _offer(queue, None)  # the stream ends
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # pushing

    async def _document(self) -> bytes | None:
        """The document now (None: it could not be built, counted and logged)."""
        try:
            if self.poll is not None:
                await asyncio.to_thread(self.poll)
            return self.encode(self.build())
        except Exception:  # a bug of ours: the page goes stale, the daemon runs on
            self._count("document_failed", outcome="error")
            log.exception("dashboard: the document could not be built")
            return None

    async def _publish(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._clients:
                data = await self._document()
                if data is not None and data != self._last:
                    self._last = data
                    self.counters["pushes"] += 1
                    for queue in self._clients:
                        _offer(queue, data)
            await asyncio.sleep(self.interval_s)  # what changes meanwhile is one push

    # handlers

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.counters["requests"] += 1
        if self.host in _LOOPBACK_NAMES and _host_name(request.host) not in _LOOPBACK_NAMES:
            return self._refuse("bad_host", 421, "this dashboard answers to localhost only")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                self._count(_HTTP_REASON.get(exc.status, f"http_{exc.status}"))
            raise
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            self._count("internal")
            log.exception("dashboard: %s %s failed", request.method, request.path)
            return web.json_response({"message": "internal error"}, status=500)
        for key, value in _HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=PAGE, content_type="text/html", charset="utf-8")

    async def _state(self, request: web.Request) -> web.StreamResponse:
        data = await self._document()
        if data is None:
            return web.json_response({"message": "the document could not be built"}, status=500)
        return web.Response(body=data, content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if len(self._clients) >= MAX_CLIENTS:
            self._count("too_many_pages")
            return web.json_response({"message": "too many open pages"}, status=503)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        for key, value in _HEADERS.items():
            response.headers.setdefault(key, value)
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._clients.add(queue)
        self.counters["pages_opened"] += 1
        try:
            await response.write(b"retry: 1000\n\n")
            first = await self._document()
            if first is not None:
                await response.write(b"data: " + first + b"\n\n")
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), _KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if data is None:
                    break
                await response.write(b"data: " + data + b"\n\n")
        except ConnectionError:
            pass  # the page was closed
        finally:
            self._clients.discard(queue)
        return response

    async def _action(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ACTIONS:
            return self._refuse("unknown_action", 404, f"no action {name[:40]!r}")
        refusal = check_authorization(request.headers.get("Authorization"), self.token)
        if refusal is not None:
            message = {
                "read_only": "read-only: no dashboard token is configured",
                "unauthenticated": "an action needs Authorization: Bearer <token>",
                "bad_token": "wrong token",
            }[refusal]
            return self._refuse(refusal, _STATUS_REFUSAL[refusal], message)
        reason = await self._reason(request)
        if reason is None:
            return self._refuse("bad_body", 400, 'the body must be {"reason": "<text>"}')
        if self.submit is None:
            return self._refuse("not_connected", 503, "not connected to the broker yet")
        action: CommandAction = name  # type: ignore[assignment]  # one of ACTIONS
        why = self.submit(action, reason)
        if why == "not_connected":
            return self._refuse("not_connected", 503, "not connected to the broker")
        if why is not None:
            return self._refuse(f"command_{why}", 409, f"the command was refused: {why}")
        self._count(name, outcome="accepted")
        log.warning("dashboard: operator %s accepted (%s) from %s", name, reason,
                    request.remote)  # fmt: skip
        return web.json_response(
            {"message": f"{name} sent (signed, journaled before it applies)"}, status=202
        )

    async def _reason(self, request: web.Request) -> str | None:
        """The body's reason ("" for an empty body); None: not an action's body."""
        raw = await request.read()  # over MAX_BODY_BYTES: aiohttp refuses with 413
        if not raw.strip():
            return ""
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(doc, dict) or set(doc) - {"reason"}:
            return None
        reason = doc.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            return None
        return "".join(c for c in reason if c.isprintable())

    def _refuse(self, reason: str, status: int, message: str) -> web.Response:
        self._count(reason)
        return web.json_response({"message": message}, status=status)

    def _count(self, reason: str, *, outcome: str = "refused") -> None:
        key = f"{outcome}_{reason}"
        self.counters[key] += 1
        if self.on_count is not None:
            self.on_count(key)


_HTTP_REASON: Final = {
    404: "not_found",
    405: "wrong_method",
    413: "too_large",
    400: "bad_request",
}


def _host_name(host: str) -> str:
    """The name of a ``Host`` header, without its port (``[::1]:80`` -> ``[::1]``)."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _offer(queue: asyncio.Queue[bytes | None], data: bytes | None) -> None:
    """Put the newest document, replacing one the page has not taken yet."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(data)


__all__ = ["ACTIONS", "MAX_BODY_BYTES", "ActionSubmit", "Dashboard"]
