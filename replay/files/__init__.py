"""Tick files: readers, formats, the file boundary, plausibility, configs inferred from data, sample data."""
