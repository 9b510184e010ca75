"""Cancel-on-disconnect, the OMS's side of the contract (``adapters.tools.oms.oms_sim`` runs it):
which daemon is gone, read from the retained statuses, without I/O.

A daemon is gone when its status goes ``offline`` (its last will, which the broker
publishes when it loses the daemon, or its goodbye) or when no status came from it for
``heartbeat_lapse_s`` while it was online (a frozen process, a half-open connection the
broker has not noticed yet). The OMS then cancels the working orders of that node (client
order ids ``{node}-...``) on its account. As at exchanges, a clean stop counts too: a
daemon whose orders should rest across its restarts (``cancel_on_stop = false``) runs on
an account with cancel-on-disconnect off.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.mqtt.status import decode_status


@dataclass(frozen=True, slots=True)
class CancelOnDisconnect:
    """When the OMS cancels a daemon's working orders on its own (per account).

    Attributes:
        enabled: cancel when the daemon's status goes offline and when its heartbeat
            lapses.
        heartbeat_lapse_s: no status from an online daemon for this long cancels its
            orders (None: only an offline status does).

    Raises:
        ValueError: ``heartbeat_lapse_s`` is not positive.
    """

    enabled: bool = False
    heartbeat_lapse_s: float | None = None

    def __post_init__(self) -> None:
        if self.heartbeat_lapse_s is not None and self.heartbeat_lapse_s <= 0:
            raise ValueError(f"heartbeat_lapse_s must be > 0, got {self.heartbeat_lapse_s}")


class NodeWatch:
    """The daemons on an account, from their statuses: which are gone, and why.

    Args:
        rules: cancel-on-disconnect's settings.
        prefix: the topic prefix (``Topics.prefix``).
    """

    def __init__(self, rules: CancelOnDisconnect, prefix: str = "") -> None:
        self.rules = rules
        self.topic_filter = f"{prefix}tradeloop/+/status"
        self._head = f"{prefix}tradeloop/"
        self._seen: dict[str, float] = {}  # online nodes: node -> last status (s)

    def is_status(self, topic: str) -> bool:
        """Whether ``topic`` is a node's status topic."""
        return topic.startswith(self._head) and topic.endswith("/status")

    def on_status(self, topic: str, raw: bytes, now_s: float) -> tuple[str, str] | None:
        """A status read at ``now_s`` (a monotonic clock, s): the node and the reason to
        cancel its orders if it went offline, else None.

        Raises:
            msgspec.DecodeError, msgspec.ValidationError: not a status message.
        """
        node = topic[len(self._head) : -len("/status")]
        if not raw:
            self._seen.pop(node, None)  # a cleared retained status
            return None
        status = decode_status(raw)
        if status.online:
            self._seen[node] = now_s
            return None
        self._seen.pop(node, None)
        return node, "cancel-on-disconnect: status offline"

    def lapsed(self, now_s: float) -> list[tuple[str, str]]:
        """The online nodes silent for longer than the lapse, each with its reason; each
        is reported once, until a status says it is online again."""
        lapse = self.rules.heartbeat_lapse_s
        if lapse is None:
            return []
        out = []
        for node, seen in list(self._seen.items()):
            if now_s - seen > lapse:
                del self._seen[node]
                out.append((node, f"cancel-on-disconnect: heartbeat lapsed "
                                  f"({now_s - seen:.1f} s without a status)"))  # fmt: skip
        return out


__all__ = ["CancelOnDisconnect", "NodeWatch"]
