"""Serving keras-vit models: the TF Serving client library and the local server."""
