"""``keras-vit evaluate``: one report for an in-process or a served model.

:func:`~keras_vit.evaluate.runner.evaluate` classifies a labelled data set
with a :class:`~keras_vit.evaluate.predictors.LocalPredictor` or a
:class:`~keras_vit.evaluate.predictors.ServerPredictor` and writes
``predictions.jsonl``, ``metrics.json``, the PNG plots and ``report.html``.
"""
