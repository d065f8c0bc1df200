"""Finds the exported SavedModel to run and checks its ``serving_default`` signature.

Runs where the pipeline is launched, before anything starts, so that a wrong
``--model-dir`` is one clear line, not a worker's traceback minutes later.
Paths go through ``tf.io.gfile``: local directories and ``gs://`` alike.
"""

from __future__ import annotations

import re

from google.protobuf.message import DecodeError

SIGNATURE = "serving_default"
INPUT = "image_bytes"
OUTPUTS = ("label", "score", "top_k_labels", "top_k_scores")
_VERSION_NAME = re.compile(r"^[0-9]+$")


class ModelDirError(ValueError):
    """``--model-dir`` is not an exported keras-vit model (or a base path holding one)."""


def resolve_model_dir(path: str) -> str:
    """The version directory to load: ``path`` itself, or the highest version under it.

    Raises :class:`ModelDirError` naming what is wrong: missing directory, no
    ``saved_model.pb`` and no version under it, no ``serving_default`` signature,
    or a signature that does not take ``image_bytes`` and return the four outputs.
    """
    import tensorflow as tf

    path = path.rstrip("/") or "/"
    if not tf.io.gfile.isdir(path):
        raise ModelDirError(f"--model-dir {path}: no such directory")
    if not _is_version(path):
        versions = [
            int(name.rstrip("/"))
            for name in tf.io.gfile.listdir(path)
            if _VERSION_NAME.match(name.rstrip("/")) and _is_version(_join(path, name.rstrip("/")))
        ]
        if not versions:
            raise ModelDirError(
                f"--model-dir {path}: no saved_model.pb in it, nor a version directory "
                "(1/, 2/, ...) holding one; give the directory `keras-vit export` wrote"
            )
        path = _join(path, str(max(versions)))
    _check_signature(path)
    return path


def _is_version(path: str) -> bool:
    """A float export (``saved_model.pb``) or an int8 one (``keras_vit_int8/saved_model.pb``)."""
    import tensorflow as tf

    from serving.int8_runtime import RUNTIME_DIR

    return tf.io.gfile.exists(_join(path, "saved_model.pb")) or tf.io.gfile.exists(
        _join(path, RUNTIME_DIR, "saved_model.pb")
    )


def _check_signature(path: str) -> None:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from serving.int8_runtime import RUNTIME_DIR

    pb = _join(path, "saved_model.pb")
    if not tf.io.gfile.exists(pb):  # an int8 version: its TF part has the signatures
        pb = _join(path, RUNTIME_DIR, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(pb, "rb") as file:
            saved_model.ParseFromString(file.read())
    except (DecodeError, tf.errors.OpError) as error:
        raise ModelDirError(f"--model-dir {path}: unreadable saved_model.pb: {error}") from None
    signatures = {}
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            signatures = meta_graph.signature_def
    if SIGNATURE not in signatures:
        raise ModelDirError(
            f"--model-dir {path}: the SavedModel has no {SIGNATURE!r} signature "
            f"(it has: {', '.join(sorted(signatures)) or 'none'})"
        )
    signature = signatures[SIGNATURE]
    missing = [name for name in OUTPUTS if name not in signature.outputs]
    if list(signature.inputs) != [INPUT] or missing:
        raise ModelDirError(
            f"--model-dir {path}: {SIGNATURE} takes {sorted(signature.inputs)} and returns "
            f"{sorted(signature.outputs)}; batch-predict needs a keras-vit export "
            f"({INPUT!r} in, {', '.join(OUTPUTS)} out)"
        )


def _join(*parts: str) -> str:
    return "/".join(part.rstrip("/") for part in parts)
