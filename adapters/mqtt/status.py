"""The daemon's status message: retained on ``topics.status``; the same topic carries the
last will, so a crashed daemon reads ``online: false`` to every subscriber."""

from __future__ import annotations

import msgspec

_ENCODER = msgspec.json.Encoder()


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One model's figures in a status: the champion, or the challenger in shadow.

    Attributes:
        role: ``champion`` or ``challenger``.
        model: the model's name.
        version: its registry version ("" for a model folder outside a registry).
        stage: its registry stage (``shadow``, ``paper``, ``live``; "" when unknown).
        ic: the monitor's last rolling Spearman IC (None before its first check).
        hit_ratio: the monitor's last hit ratio (None before its first check).
        scored: predictions the monitor has scored against realized returns.
        alarms: the monitor's alarms so far, by kind.
    """

    role: str
    model: str
    version: str
    stage: str
    ic: float | None
    hit_ratio: float | None
    scored: int
    alarms: dict[str, int]


class Status(msgspec.Struct, frozen=True, kw_only=True):
    """One heartbeat of a daemon.

    Attributes:
        node: the daemon's node name (as in ``Topics.node``).
        mode: ``shadow``, ``paper`` or ``live`` (empty in the will: not known to the broker).
        state: trading state (``ACTIVE``, ``REDUCE_ONLY``, ``HALTED``), or ``offline``.
        online: False in the last will and in the goodbye of a clean stop.
        ts_ns: wall-clock time of the heartbeat (0 in the will, written at connect time).
        positions: signed position per instrument symbol.
        pnl: total profit and loss, in the account currency.
        heartbeat_seq: increases by one per heartbeat within a process.
        models: the champion's and the challenger's monitor figures, side by side
            (empty without a model monitor, and in the will).
        claims: who restricts trading: each holder's claim other than ``ACTIVE``
            (``operator``, ``shutdown``, ``reconciliation``, ``daemon``, ``loss_limit``,
            ``data_loss``, ``automatic``; see ``engine.trading_state``).
    """

    node: str
    mode: str
    state: str
    online: bool
    ts_ns: int
    positions: dict[str, float]
    pnl: float
    heartbeat_seq: int
    models: list[ModelStatus] = msgspec.field(default_factory=list)
    claims: dict[str, str] = msgspec.field(default_factory=dict)


_DECODER = msgspec.json.Decoder(Status)


def encode_status(status: Status) -> bytes:
    """JSON bytes of ``status`` (status is JSON whatever the session's format: people read it)."""
    return _ENCODER.encode(status)


def decode_status(payload: bytes) -> Status:
    """Decode a status payload.

    Raises:
        msgspec.DecodeError: ``payload`` is not a status message.
    """
    return _DECODER.decode(payload)


def offline_payload(node: str) -> bytes:
    """The last-will payload of ``node``: offline, nothing known about its book."""
    return encode_status(
        Status(
            node=node,
            mode="",
            state="offline",
            online=False,
            ts_ns=0,
            positions={},
            pnl=0.0,
            heartbeat_seq=0,
        )
    )
