"""tradeloop's pure core: events, clock, loop, features, signals, portfolio, orders, risk.

Nothing in this package performs I/O or imports ``adapters``, ``replay`` or ``strategies``.
"""
