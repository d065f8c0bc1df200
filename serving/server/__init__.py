"""A local TF-Serving-compatible model server (gRPC and REST) for SavedModels.

Run it with ``python -m serving.server --model_base_path=/abs/path --rest_api_port=8501``
or ``keras-vit serve`` with the same flags; embed it with
:class:`serving.server.server.Server` and :class:`serving.server.options.ServerOptions`.
Importing this package does not import TensorFlow (it imports keras_vit first, whose
quiet import hook then filters TensorFlow's start-up lines when a module loads it).
"""

# First: keras_vit's import keeps TensorFlow's start-up lines quiet (keras_vit/quiet.py).
import keras_vit  # noqa: F401
from serving.server.options import ServerOptions

__all__ = ["ServerOptions"]
