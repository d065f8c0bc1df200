"""Builders of the small SavedModels the server tests serve.

``half_plus_two`` is rebuilt the way TF Serving's own test model is
(``tensorflow/cc/saved_model/testdata/half_plus_two``, written by
``saved_model_half_plus_two.py``): y = 0.5 * x + 2 with variables, a
``tf_example`` string placeholder parsed into ``x``/``x2``, and the six
signatures listed in TF Serving's ``saved_model_half_plus_two_2_versions_metadata.json``.
The other builders make models for particular cases: a string model taking
JPEG bytes, echo models for the JSON request cases, constant-output models for
the JSON response cases, and an Example-echo classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# isort: off
import serving  # noqa: F401  (first: TensorFlow's start-up lines stay quiet, as for users)
import tensorflow as tf

# isort: on
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import prediction_log_pb2

v1 = tf.compat.v1
_SIG = v1.saved_model.signature_def_utils
_UTILS = v1.saved_model.utils
PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def _save(export_dir: Path, session, signatures: Mapping[str, object]) -> Path:
    builder = v1.saved_model.Builder(str(export_dir))
    builder.add_meta_graph_and_variables(
        session, ["serve"], signature_def_map=dict(signatures), strip_default_attrs=True
    )
    builder.save()
    return export_dir


def _signature(inputs: Mapping, outputs: Mapping, method: str):
    return _SIG.build_signature_def(
        inputs={k: _UTILS.build_tensor_info(v) for k, v in inputs.items()},
        outputs={k: _UTILS.build_tensor_info(v) for k, v in outputs.items()},
        method_name=method,
    )


def build_half_plus(
    export_dir: Path,
    b: float = 2.0,
    method_named_signatures: bool = False,
    classify_x2_to_y3: bool = True,
) -> Path:
    """One version of ``half_plus_two`` (``b=2``) or ``half_plus_three`` (``b=3``).

    ``method_named_signatures`` adds signatures keyed by method name
    (``tensorflow/serving/regress``...), as TF Serving's half_plus_three has.
    ``classify_x2_to_y3=False`` leaves out the signature that TF's older single-version
    ``half_plus_two`` lacks (compare TF Serving's two metadata JSON files).
    """
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a = v1.Variable(0.5, name="a")
        b_var = v1.Variable(b, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        features = v1.parse_example(
            serialized,
            {
                "x": v1.FixedLenFeature([1], dtype=tf.float32),
                "x2": v1.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
            },
        )
        x = tf.identity(features["x"], name="x")
        # parse_example of an unknown-rank input has no static shape any more; the
        # original model's x was [-1, 1], as its metadata shows.
        x.set_shape([None, 1])
        y = tf.add(tf.multiply(a, x), b_var, name="y")
        y2 = tf.add(tf.multiply(a, x), c, name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        x2.set_shape([None, 1])
        y3 = tf.add(tf.multiply(a, x2), c, name="y3")
        session.run(v1.global_variables_initializer())
        signatures = {
            "serving_default": _signature({"x": x}, {"y": y}, PREDICT),
            "classify_x_to_y": _signature({"inputs": serialized}, {"scores": y}, CLASSIFY),
            "classify_x2_to_y3": _signature({"inputs": x2}, {"scores": y3}, CLASSIFY),
            "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": y}, REGRESS),
            "regress_x_to_y2": _signature({"inputs": serialized}, {"outputs": y2}, REGRESS),
            "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, REGRESS),
        }
        if not classify_x2_to_y3:
            del signatures["classify_x2_to_y3"]
        if method_named_signatures:
            signatures[PREDICT] = _signature({"x": x}, {"y": y}, PREDICT)
            signatures[CLASSIFY] = _signature({"inputs": serialized}, {"scores": y}, CLASSIFY)
            signatures[REGRESS] = _signature({"inputs": serialized}, {"outputs": y}, REGRESS)
        return _save(export_dir, session, signatures)


def build_half_plus_two_base(base_path: Path, versions: Sequence[int] = (123,)) -> Path:
    """A model base path with TF's ``half_plus_two`` per version (``00000123/`` names),
    whose metadata is TF Serving's ``half_plus_two_model_metadata.json``."""
    base_path.mkdir(parents=True, exist_ok=True)
    for version in versions:
        build_half_plus(base_path / f"{version:08d}", classify_x2_to_y3=False)
    return base_path


def build_string_model(export_dir: Path) -> Path:
    """``image_bytes`` (DT_STRING [-1]) -> length, the bytes back (``echo_bytes``) and,
    decoding them as JPEG, ``height``/``width``; a second signature ``length_only``."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        images = v1.placeholder(tf.string, shape=[None], name="image_bytes")
        length = tf.strings.length(images, name="length")
        echo = tf.identity(images, name="echo")
        shapes = tf.map_fn(
            lambda data: tf.shape(tf.io.decode_jpeg(data, channels=3))[:2],
            images,
            fn_output_signature=tf.int32,
        )
        height = tf.identity(shapes[:, 0], name="height")
        width = tf.identity(shapes[:, 1], name="width")
        signatures = {
            "serving_default": _signature(
                {"image_bytes": images},
                {"length": length, "echo_bytes": echo, "height": height, "width": width},
                PREDICT,
            ),
            "length_only": _signature({"image_bytes": images}, {"length": length}, PREDICT),
        }
        return _save(export_dir, session, signatures)


def build_echo_model(
    export_dir: Path, inputs: Mapping[str, int], signature_name: str = "serving_default"
) -> Path:
    """Outputs every input unchanged under the same alias (inputs of any shape)."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        tensors = {
            alias: v1.placeholder(tf.dtypes.as_dtype(dtype), shape=None, name=f"in_{index}")
            for index, (alias, dtype) in enumerate(inputs.items())
        }
        outputs = {
            alias: tf.identity(t, name=f"out_{i}") for i, (alias, t) in enumerate(tensors.items())
        }
        signatures = {signature_name: _signature(tensors, outputs, PREDICT)}
        return _save(export_dir, session, signatures)


def build_constant_model(export_dir: Path, outputs: Mapping[str, tensor_pb2.TensorProto]) -> Path:
    """Ignores its ``dummy`` input and returns fixed tensors (for the JSON writer cases)."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        dummy = v1.placeholder(tf.int32, shape=None, name="dummy")
        constants = {}
        for index, (alias, proto) in enumerate(outputs.items()):
            value = tf.make_ndarray(proto)
            constants[alias] = tf.identity(
                tf.constant(value, dtype=tf.dtypes.as_dtype(proto.dtype)), name=f"const_{index}"
            )
        signatures = {"serving_default": _signature({"dummy": dummy}, constants, PREDICT)}
        return _save(export_dir, session, signatures)


def build_results_model(export_dir: Path) -> Path:
    """Classify/regress signatures with fixed results (TF Serving's JSON result cases)."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        examples = v1.placeholder(tf.string, shape=[None], name="examples")
        classes = tf.constant([[b"car", b"bike", b"bus"], [b"car", b"bike", b"bus"]])
        scores = tf.constant([[0.2, 0.7, 0.1], [0.7, 0.1, 0.2]], dtype=tf.float32)
        regressions = tf.constant([0.2, 0.9, 1.0], dtype=tf.float32)
        non_finite = tf.constant([0.2, np.inf, 1.0, -np.inf, np.nan], dtype=tf.float32)
        signatures = {
            "classify_const": _signature(
                {"inputs": examples}, {"classes": classes, "scores": scores}, CLASSIFY
            ),
            "regress_const": _signature({"inputs": examples}, {"outputs": regressions}, REGRESS),
            "regress_non_finite": _signature(
                {"inputs": examples}, {"outputs": non_finite}, REGRESS
            ),
        }
        return _save(export_dir, session, signatures)


def build_example_echo_model(export_dir: Path, extra_signature: str | None = None) -> Path:
    """A classifier whose ``classes`` are the serialized tf.Examples it received.

    TF Serving's classify path serializes the request's Examples (context bytes
    first) into the input tensor; echoing them lets a test compare exactly what
    the JSON request turned into.
    """
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        examples = v1.placeholder(tf.string, shape=[None], name="examples")
        classes = tf.expand_dims(examples, 1, name="classes")
        zeros = tf.zeros(tf.shape(classes), dtype=tf.float32, name="zeros")
        ones = tf.ones(tf.shape(classes), dtype=tf.float32, name="ones")
        outputs = {"classes": classes, "scores": zeros}
        signatures = {"serving_default": _signature({"inputs": examples}, outputs, CLASSIFY)}
        if extra_signature:  # scores 1.0, so a test can tell which signature ran
            outputs = {"classes": classes, "scores": ones}
            signatures[extra_signature] = _signature({"inputs": examples}, outputs, CLASSIFY)
        return _save(export_dir, session, signatures)


def write_warmup(version_dir: Path, records: Sequence[prediction_log_pb2.PredictionLog]) -> Path:
    """Writes ``assets.extra/tf_serving_warmup_requests`` as TF Serving's docs show."""
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return path


def build_slow_model(export_dir: Path) -> Path:
    """``iterations`` (int64 scalar) -> ``count``: a loop that runs that many steps,
    for session-run timeouts (about 10 microseconds a step)."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        iterations = v1.placeholder(tf.int64, shape=[], name="iterations")
        count = tf.while_loop(lambda i: i < iterations, lambda i: i + 1, [tf.constant(0, tf.int64)])
        count = tf.identity(count, name="count")
        signature = _signature({"iterations": iterations}, {"count": count}, PREDICT)
        return _save(export_dir, session, {"serving_default": signature})
