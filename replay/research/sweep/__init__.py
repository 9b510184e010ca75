"""Parameter sweeps (``tradeloop sweep``): plan, trials, executors, the resumable store, the report."""
