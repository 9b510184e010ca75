"""Research on tick files: training datasets, walk-forward training, overfitting statistics, parameter sweeps."""
