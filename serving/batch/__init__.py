"""Batch prediction on Apache Beam: ``keras-vit batch-predict`` (needs the ``batch`` extra).

- :mod:`serving.batch.model_dir`: finds and checks the exported SavedModel (a version
  directory, or a base path whose highest version is taken, as TF Serving does);
- :mod:`serving.batch.model_handler`: our Beam ``ModelHandler``: loads the SavedModel
  with ``tf.saved_model.load`` and calls ``serving_default`` on the encoded bytes, one
  bad image never failing its batch;
- :mod:`serving.batch.records`: the output rows (JSON Lines and Parquet) and dead letters;
- :mod:`serving.batch.pipeline`: the pipeline (``fileio`` -> ``RunInference`` -> files)
  and its counters.
"""

# First: keras_vit's import keeps TensorFlow's start-up lines quiet (keras_vit/quiet.py).
import keras_vit  # noqa: E402, F401
