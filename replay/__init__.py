"""The historical driver: tick files, replay runner, backtest report, datasets and training."""
