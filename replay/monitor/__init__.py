"""The model monitor's pages and ``tradeloop monitor-report``."""
