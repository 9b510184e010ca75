"""Streams of ``TickBatch`` chunks: the readers of a run merged in time order, re-cut
into batches of a fixed size, and produced ahead on a background thread."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from engine.ticks import TickBatch

__all__ = ["merge_streams", "prefetch", "rebatch"]


def merge_streams(streams: list[Iterator[TickBatch]]) -> Iterator[TickBatch]:
    """K-way merge of time-ordered chunk streams into time-ordered chunks.

    Rows are released only below the smallest ``last ts`` of the streams still open, so
    the output order (by ts, quotes before trades, then stream order, then file order)
    does not depend on how the files were chunked.
    """
    buffers: list[TickBatch | None] = [None] * len(streams)
    open_ = [True] * len(streams)

    def refill(k: int) -> None:
        try:
            nxt = next(streams[k])
        except StopIteration:
            open_[k] = False
            return
        buf = buffers[k]
        buffers[k] = nxt if buf is None or len(buf) == 0 else TickBatch.concat([buf, nxt])

    while True:
        for k in range(len(streams)):
            while open_[k] and (buffers[k] is None or len(buffers[k]) == 0):  # type: ignore[arg-type]
                refill(k)
        if not any(open_):
            rest = [b for b in buffers if b is not None and len(b)]
            if rest:
                yield TickBatch.merge(*rest)
            return
        watermark = min(
            int(b.ts_event[-1]) for k, b in enumerate(buffers) if open_[k] and b is not None
        )
        out: list[TickBatch] = []
        for k, buf in enumerate(buffers):
            if buf is None or len(buf) == 0:
                continue
            cut = int(np.searchsorted(buf.ts_event, watermark, side="left"))
            if cut:
                out.append(buf.slice(0, cut))
                buffers[k] = buf.slice(cut, len(buf))
        if out:
            yield TickBatch.merge(*out)
        else:
            # every open stream's buffer starts at the watermark: read further in those
            for k, buf in enumerate(buffers):
                if open_[k] and buf is not None and int(buf.ts_event[-1]) == watermark:
                    refill(k)


def rebatch(chunks: Iterator[TickBatch], size: int) -> Iterator[TickBatch]:
    """Re-cut a chunk stream into batches of exactly ``size`` rows (the last may be short)."""
    pending: list[TickBatch] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            joined = TickBatch.concat(pending)
            start = 0
            while held - start >= size:
                yield joined.slice(start, start + size)
                start += size
            pending = [joined.slice(start, len(joined))] if start < len(joined) else []
            held = len(joined) - start
    if held:
        yield TickBatch.concat(pending)


def prefetch(source: Iterator[TickBatch], depth: int = 2) -> Iterator[TickBatch]:
    """Produce ``source`` on a background thread, at most ``depth`` batches ahead.

    File decoding and validation (pyarrow, polars, numpy: they release the GIL) overlap
    with the engine's numba kernels (compiled ``nogil``) on another core, while memory
    stays bounded by the queue. An exception in the producer is re-raised here.
    """
    import queue
    import threading

    q: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(("error", exc))

    worker = threading.Thread(target=produce, name="tick-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value  # type: ignore[misc]
            elif kind == "error":
                raise value  # type: ignore[misc]
            else:
                return
    finally:
        stop.set()
        worker.join(timeout=5)
