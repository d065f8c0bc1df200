"""Serving keras-vit models: the TF Serving client library and the local server.

Importing this package (or :mod:`serving.client`) imports neither TensorFlow nor
keras_vit. The modules that run TensorFlow (:mod:`serving.server`, :mod:`serving.export`,
:mod:`serving.batch`) import keras_vit first, whose import keeps TensorFlow's C++
start-up lines off the terminal (keras_vit/quiet.py).
"""
