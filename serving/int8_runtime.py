"""Runs an int8 model version: TensorFlow decodes, OpenVINO runs the int8 transformer body.

``keras-vit export --precision int8`` (:mod:`serving.int8_export`) writes a
version whose serving contract is the float32 export's (same signatures,
input and output names, dtypes and shapes), laid out as::

    <version>/
      assets.extra/keras_vit_export.json   settings, "precision": "int8", the runtime,
                                           the scheme and the calibration set
      assets.extra/tf_serving_warmup_requests
      keras_vit_int8/saved_model.pb        the TensorFlow part (no model weights):
      keras_vit_int8/variables/            the public signatures (for GetModelMetadata
      keras_vit_int8/assets/labels.txt     and request checking) and the helper
                                           signatures that run: bytes/Examples/uint8
                                           -> pixels, logits -> label/score/top-k,
                                           logits -> classes/scores
      keras_vit_int8/body.xml, body.bin    the OpenVINO int8 body: float pixels
                                           [-1, H, W, 3] -> logits, embedding

There is no ``saved_model.pb`` at the version's top level on purpose:
``tensorflow_model_server`` cannot run the OpenVINO body, so it refuses the
version at load ("Could not find SavedModel .pb or .pbtxt") instead of
loading a graph it cannot serve.

A request runs in three steps: the helper signature of its public signature
decodes it to pixels in a TF session (the float32 export's decoder, so the
same pixels and the same error messages), OpenVINO runs the body, and a
second helper turns the logits into the outputs (softmax, top-k, labels:
the same TF ops as the float32 export). :class:`Int8Runner` does that given
the TF session's run function; ``serving/server/servable.py`` and
``serving/batch`` call it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

INT8 = "int8"
RUNTIME_DIR = "keras_vit_int8"
BODY_XML = "body.xml"
BODY_BIN = "body.bin"
SETTINGS_PATH = os.path.join("assets.extra", "keras_vit_export.json")
# Helper signatures of the TF part ("~" is no valid op name: these are "zz_int8_...",
# named so that they sort after the public ones and keep their tensor names).
HELPER_PREFIX = "zz_int8_"
FRONT = HELPER_PREFIX + "front_"  # + public signature name: -> {"pixels"}
PREDICTIONS = HELPER_PREFIX + "predictions"  # logits -> label, score, top_k_*, probabilities
CLASSES = HELPER_PREFIX + "classes"  # logits -> classes, scores
LOGITS = "logits"
EMBEDDING = "embedding"
PIXELS = "pixels"
# Public signatures whose outputs come from the logits through PREDICTIONS / CLASSES.
_AFTER = {"serving_default": PREDICTIONS, "serving_pixels": PREDICTIONS, "classify": CLASSES}

# (feeds by tensor name, fetch tensor names, timeout in ms or None) -> fetched arrays.
RunFn = Callable[[dict[str, np.ndarray], Sequence[str], "int | None"], list[np.ndarray]]


class Int8Error(ValueError):
    """An int8 version that cannot be used (missing files, unknown runtime, bad request)."""


def is_int8_version(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a version directory written by ``export --precision int8``."""
    return (Path(path) / RUNTIME_DIR / "saved_model.pb").is_file()


def tf_part(path: str | os.PathLike) -> str:
    """The TensorFlow SavedModel of an int8 version."""
    return str(Path(path) / RUNTIME_DIR)


def settings(path: str | os.PathLike) -> dict:
    try:
        return json.loads((Path(path) / SETTINGS_PATH).read_text())
    except (OSError, ValueError):
        return {}


def body_bytes(path: str | os.PathLike) -> int:
    """Bytes of the int8 body's weights (what the model holds in memory, about)."""
    try:
        return (Path(path) / RUNTIME_DIR / BODY_BIN).stat().st_size
    except OSError:
        return 0


def openvino_threads(session_threads: int) -> dict:
    """The OpenVINO compile properties: latency-oriented, the TF session's thread count."""
    properties = {"PERFORMANCE_HINT": "LATENCY"}
    if session_threads > 0:
        properties["INFERENCE_NUM_THREADS"] = int(session_threads)
    return properties


class Int8Body:
    """The compiled OpenVINO body; :meth:`run` is safe to call from many threads at once
    (each thread has its own infer request)."""

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        import openvino as ov

        xml = Path(path) / RUNTIME_DIR / BODY_XML
        if not xml.is_file() or not xml.with_suffix(".bin").is_file():
            raise Int8Error(f"{xml} (and its .bin) is missing: the int8 version is incomplete")
        core = ov.Core()
        self.compiled = core.compile_model(str(xml), "CPU", openvino_threads(threads))
        names = [set(output.get_names()) for output in self.compiled.outputs]
        try:
            self._logits = next(i for i, n in enumerate(names) if LOGITS in n)
            self._embedding = next(i for i, n in enumerate(names) if EMBEDDING in n)
        except StopIteration:
            raise Int8Error(f"{xml} has no '{LOGITS}' and '{EMBEDDING}' outputs") from None
        shape = self.compiled.outputs[self._logits].get_partial_shape()
        self.num_classes = shape[1].get_length()
        self.hidden_dim = self.compiled.outputs[self._embedding].get_partial_shape()[1].get_length()
        self._local = threading.local()

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 pixels ``[n, H, W, 3]`` -> (logits ``[n, classes]``, embedding ``[n, D]``)."""
        if pixels.shape[0] == 0:
            return (
                np.zeros((0, self.num_classes), np.float32),
                np.zeros((0, self.hidden_dim), np.float32),
            )
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(pixels, dtype=np.float32)})
        # Copies: the request's output buffers are reused by its next inference.
        logits = np.array(request.get_output_tensor(self._logits).data, dtype=np.float32)
        embedding = np.array(request.get_output_tensor(self._embedding).data, dtype=np.float32)
        return logits, embedding


class Int8Runner:
    """Runs the public signatures of an int8 version by their tensor names, as a TF
    session would run the float32 export's: ``run(feeds, fetches, timeout_ms)``.

    ``signature_defs`` is the TF part's map (public and helper signatures),
    ``run_tf`` runs tensors of the TF part's graph, ``body`` the int8 body.
    """

    def __init__(self, signature_defs: Mapping, run_tf: RunFn, body: Int8Body) -> None:
        self.run_tf = run_tf
        self.body = body
        self.helpers = {k: v for k, v in signature_defs.items() if k.startswith(HELPER_PREFIX)}
        self.public = {k: v for k, v in signature_defs.items() if not k.startswith(HELPER_PREFIX)}
        self._input_of: dict[str, tuple[str, str]] = {}
        self._output_of: dict[str, tuple[str, str]] = {}
        for key, signature in self.public.items():
            for alias, info in signature.inputs.items():
                self._input_of[info.name] = (key, alias)
            for alias, info in signature.outputs.items():
                self._output_of[info.name] = (key, alias)
            if signature.inputs and FRONT + key not in self.helpers:
                raise Int8Error(f"the int8 version has no front for signature {key!r}")

    def run(
        self, feeds: dict[str, np.ndarray], fetches: Sequence[str], timeout_ms: int | None
    ) -> list[np.ndarray]:
        keys = {self._input_of[name][0] for name in feeds if name in self._input_of}
        unknown = [name for name in feeds if name not in self._input_of]
        if unknown or len(keys) != 1:
            raise Int8Error(f"cannot run the int8 version with the inputs {sorted(feeds)}")
        (key,) = keys
        front = self.helpers[FRONT + key]
        front_feeds = {
            front.inputs[self._input_of[name][1]].name: value for name, value in feeds.items()
        }
        (pixels,) = self.run_tf(front_feeds, [front.outputs[PIXELS].name], timeout_ms)
        logits, embedding = self.body.run(pixels)
        wanted = [self._output_of.get(name) for name in fetches]
        if any(w is None for w in wanted):
            missing = [n for n, w in zip(fetches, wanted, strict=True) if w is None]
            raise Int8Error(f"the int8 version has no output tensors {missing}")
        results: dict[str, np.ndarray] = {}
        after: list[str] = []
        for _, alias in wanted:
            if alias == EMBEDDING:
                results[alias] = embedding
            elif alias not in after:
                after.append(alias)
        if after:
            helper = self.helpers[_AFTER[key]]
            outputs = self.run_tf(
                {helper.inputs[LOGITS].name: logits},
                [helper.outputs[alias].name for alias in after],
                timeout_ms,
            )
            results.update(zip(after, outputs, strict=True))
        return [results[alias] for _, alias in wanted]
