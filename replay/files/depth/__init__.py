"""Depth files: converters from venue captures and vendor files to the tradeloop depth
parquet (``engine.book.schema``), and the reader that streams it as ``DepthBatch``es."""
