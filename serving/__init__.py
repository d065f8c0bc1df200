"""Serving keras-vit models: the TF Serving client library and the local server."""

from keras_vit import quiet as _quiet

_quiet.install()  # TensorFlow's C++ start-up lines stay off the terminal (keras_vit/quiet.py)
