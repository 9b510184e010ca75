"""The backtest: the replay runner, its run folder and report, performance figures, charts, runs compared."""
