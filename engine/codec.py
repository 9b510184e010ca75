"""The two wire codecs of the event union: JSON (default) and MessagePack.

Build a codec once per stream and reuse it; decoding failures become ``BadMessage``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.errors import BadMessage
from engine.events import AnyEvent, Event

Format = Literal["json", "msgpack"]


class EventCodec:
    """Encodes and decodes any tradeloop event in one format.

    Args:
        fmt: ``"json"`` or ``"msgpack"``.
        source: name used in ``BadMessage`` (topic, file) to say where bad bytes came from.
    """

    def __init__(self, fmt: Format = "json", source: str = "wire") -> None:
        self.format: Format = fmt
        self.source = source
        if fmt == "json":
            self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder = msgspec.json.Encoder()
            self._decoder: msgspec.json.Decoder[AnyEvent] | msgspec.msgpack.Decoder[AnyEvent] = (
                msgspec.json.Decoder(AnyEvent)
            )
        elif fmt == "msgpack":
            self._encoder = msgspec.msgpack.Encoder()
            self._decoder = msgspec.msgpack.Decoder(AnyEvent)
        else:
            raise ValueError(f"unknown codec format {fmt!r}")

    def encode(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def decode(self, raw: bytes) -> AnyEvent:
        """Decode one event.

        Raises:
            BadMessage: the bytes are not a valid event of this format.
        """
        try:
            return self._decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadMessage(bytes(raw), self.source, str(exc)) from exc
        except RecursionError as exc:  # msgspec's answer to deeply nested input
            raise BadMessage(bytes(raw), self.source, "nested too deeply") from exc
