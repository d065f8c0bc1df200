"""``keras-vit ui``: a small page on 127.0.0.1 to try a model on your own images.

It talks to any TF-Serving-compatible endpoint through
:class:`serving.client.ServingClient` (or runs the model in-process), so it
sits beside the server, not inside it. See :mod:`keras_vit.ui.app`.
"""
