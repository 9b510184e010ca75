"""``tradeloop live-demo``: the live path on one machine (``live_demo``), its broker (``broker``) and what it prints (``report``)."""
