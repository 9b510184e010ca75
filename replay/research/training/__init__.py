"""``tradeloop train``: walk-forward training on tick files, in these modules.

- ``run``: ``train``, from the dataset to the model folder (model file, manifest with
  the monitor's reference and the warnings, report).
- ``folds``: the purged, embargoed walk-forward splits.
- ``families``: the ladder's seven families, their hyperparameters, what each scores.
- ``fit``: one fit of a family (LightGBM's three, the linear and logistic models) and
  LightGBM's parameters; ``sklearn_fit``: the SVM and the MLP; ``trained``: the fitted
  model they return.
- ``model_files``: the final model's file (LightGBM text, linear JSON, ONNX via
  ``onnx_export``) and its importance.
- ``metrics``: out-of-sample metrics (accuracy, precision, recall, AUC, IC).
- ``walk_forward``: every fold fit and scored, here or on the sweep's executor.
- ``worker``: one fold on a worker (its task, its outcome, ``run_fold``).
- ``significance``: intervals (block bootstrap) and p-values against chance (circular
  shift) of out-of-sample figures whose labels overlap.
- ``baselines``: single-feature baselines (sign chosen on training rows) and the net
  edge per trade at the strategy's thresholds after fees and the spread.
- ``assessment``: both for a trained model: the manifest's ``statistics`` and the
  warnings.
- ``report``: ``training_report.html`` and ``training_report.png``
  (``report_statistics``: its sections on significance, baselines and costs).
"""
