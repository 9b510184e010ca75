"""The L2 order book: the depth schema (``schema``), the depth micro-batch (``batch``) and
the numba book kept per instrument (``book``). Pure: no file or network I/O here."""
