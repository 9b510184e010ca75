"""``tradeloop train DATA --ladder``: every model family on the same folds, compared.

- ``run``: the ladder from the data to ``OUT/<family>/`` model folders and the report.
- ``compare``: figures with intervals on the shared rows; the recommendation's rule.
- ``scoring``: scoring time per row of a served model.
- ``result``: ``ladder.json``'s structure.
- ``report``: ``ladder.json`` and the self-contained ``ladder.html``.
- ``command``: the command line.
"""
