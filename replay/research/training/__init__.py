"""``tradeloop train``: walk-forward training on tick files, in these modules.

- ``run``: ``train``, from the dataset to the model folder (model file, manifest with
  the monitor's reference and the warnings, report).
- ``folds``: the purged, embargoed walk-forward splits.
- ``fit``: one fit (LightGBM or the logistic baseline) and LightGBM's parameters.
- ``metrics``: out-of-sample metrics (accuracy, precision, recall, AUC, IC).
- ``walk_forward``: every fold fit and scored, here or on the sweep's executor.
- ``worker``: one fold on a worker (its task, its outcome, ``run_fold``).
- ``report``: ``training_report.html`` and ``training_report.png``.
"""
