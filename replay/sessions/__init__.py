"""Recorded live sessions: replay of a daemon's journal, and parity with its decisions."""
