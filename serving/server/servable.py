"""One loaded model version: a SavedModel in its own TF1 graph and session.

TF Serving loads each version with the TF1 SavedModel loader
(``LoadSessionBundleOrSavedModelBundle``) and runs signatures by feeding and
fetching the tensor names recorded in the ``SignatureDef``. This does the
same through ``tf.compat.v1.saved_model.loader.load`` and the raw
``TF_SessionRun`` binding, which (unlike ``Session.run``) neither casts feeds
to the placeholder dtype nor checks their static shape: a ``[3]`` tensor fed to
a ``[-1, 1]`` input runs, and a bool fed to a float input fails with
TensorFlow's own ``Expects arg[0] to be float but bool is provided``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow.python.client import pywrap_tf_session as tf_session
from tensorflow.python.util import deprecation

from serving import int8_runtime
from serving.server.logs import get_logger
from serving.server.status import Code, ServingError, from_tf_error

log = get_logger()

# (feeds by tensor name, fetch tensor names, timeout in ms or None) -> fetched arrays.
RunFn = Callable[[dict[str, np.ndarray], Sequence[str], "int | None"], list[np.ndarray]]


def servable_id(name: str, version: int) -> str:
    """``ServableId::DebugString``."""
    return f"{{name: {name} version: {version}}}"


# A request's decoded inputs may take as many bytes as the model's variables, and at
# least this many (--max_request_tensor_bytes overrides it).
MIN_REQUEST_BUDGET = 64 * 1024 * 1024


def variables_bytes(path: str) -> int:
    """Bytes of the SavedModel's variables (what the model itself holds in memory)."""
    total = 0
    directory = path.rstrip("/") + "/variables"
    try:
        for root, _, files in tf.io.gfile.walk(directory):
            for name in files:
                total += tf.io.gfile.stat(f"{root.rstrip('/')}/{name}").length
    except tf.errors.OpError:
        pass
    return total


def _as_array(value) -> np.ndarray:
    # Scalar string outputs come back as bytes; strings are object arrays everywhere else.
    if isinstance(value, bytes):
        array = np.empty((), dtype=object)
        array[()] = value
        return array
    array = np.asarray(value)
    if array.dtype.kind == "S":
        return array.astype(object)
    return array


def load_error(error: Exception, path: str, tags: Sequence[str]) -> ServingError:
    """The status TF Serving's C++ loader (``LoadSavedModel``) gives for the failure the
    Python loader raised: same code, and its text where the Python loader words it
    otherwise. GetModelStatus shows it as the failed version's ``status``."""
    if isinstance(error, tf.errors.OpError):
        failure = from_tf_error(error)
        return ServingError(failure.code, _without_python_frames(failure.message))
    text = str(error)
    if isinstance(error, OSError) and text.startswith("Cannot parse file"):
        # tensorflow/core/platform/env.cc ReadBinaryProto.
        pb = path.rstrip("/") + "/saved_model.pb"
        return ServingError(Code.DATA_LOSS, f"Can't parse {pb} as binary proto")
    if isinstance(error, RuntimeError) and "could not be found in SavedModel" in text:
        # tensorflow/cc/saved_model/reader.cc FindMetaGraphDef.
        return ServingError(
            Code.NOT_FOUND,
            f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. "
            "To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
            "`saved_model_cli`",
        )
    # The Python loader reports a missing SavedModel with these.
    code = Code.NOT_FOUND if isinstance(error, (OSError, RuntimeError)) else Code.INTERNAL
    return ServingError(code, text)


def _without_python_frames(message: str) -> str:
    r"""The op's own message: Python's session adds "Graph execution error: Detected at node
    'n' defined at (most recent call last): ... Node: 'n'" before it; TF Serving's C++
    session does not.

    >>> _without_python_frames("Graph execution error:\n\nDetected at node 'save/RestoreV2' "
    ...     "defined at (most recent call last):\nNode: 'save/RestoreV2'\nRead less bytes")
    'Read less bytes'
    """
    if not message.startswith("Graph execution error:"):
        return message
    lines = message.split("\n")
    nodes = [i for i, line in enumerate(lines) if line.startswith("Node: '")]
    if not nodes:
        return message
    rest = "\n".join(lines[nodes[-1] + 1 :]).strip()
    return rest or message


class Servable:
    """A loaded SavedModel version; ``run`` is safe to call from many threads at once.

    In-flight requests hold a reference (:meth:`acquire`/:meth:`release`) so that
    unloading waits for them before closing the session.
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: str,
        graph: tf.Graph,
        session: tf.compat.v1.Session,
        meta_graph_def: meta_graph_pb2.MetaGraphDef,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.graph = graph
        self.session = session
        self.meta_graph_def = meta_graph_def
        self.signature_defs = meta_graph_def.signature_def
        self._outputs: dict[str, object] = {}
        self._outputs_lock = threading.Lock()
        self._refs = 0
        self._refs_cond = threading.Condition()
        self._closed = False
        # Replaced by the batching scheduler's entry point when batching is enabled.
        self.runner: RunFn = self.run_direct
        self.request_budget = max(MIN_REQUEST_BUDGET, variables_bytes(path))

    @classmethod
    def load(
        cls,
        name: str,
        version: int,
        path: str,
        tags: Sequence[str],
        session_config: config_pb2.ConfigProto,
    ) -> Servable:
        """Loads ``path`` with the TF1 loader; raises :class:`ServingError` on failure."""

        if int8_runtime.is_int8_version(path):
            return cls._load_int8(name, version, path, tags, session_config)
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=session_config)
        start = time.monotonic()
        log.info("Reading SavedModel from: %s", path)
        try:
            with graph.as_default(), deprecation.silence():
                meta_graph_def = tf.compat.v1.saved_model.loader.load(session, list(tags), path)
        except Exception as error:  # noqa: BLE001 - every loader failure fails the load
            session.close()
            log.info(
                "SavedModel load for tags { %s }; Status: fail: %s. Took %d microseconds.",
                " ".join(tags),
                error,
                (time.monotonic() - start) * 1e6,
            )
            raise load_error(error, path, tags) from None
        log.info(
            "SavedModel load for tags { %s }; Status: success: OK. Took %d microseconds.",
            " ".join(tags),
            (time.monotonic() - start) * 1e6,
        )
        graph.finalize()
        return cls(name, version, path, graph, session, meta_graph_def)

    @classmethod
    def _load_int8(cls, name, version, path, tags, session_config) -> Servable:
        """An int8 version (serving/int8_runtime.py): its TF part in a session as above, the
        int8 body in OpenVINO; the helper signatures are hidden from the metadata."""

        log.info("Version %s is an int8 keras-vit version: OpenVINO body, TF part in a session "
                 "(tensorflow_model_server cannot load it)", path)  # fmt: skip
        servable = cls.load(name, version, int8_runtime.tf_part(path), tags, session_config)
        try:
            body = int8_runtime.Int8Body(path, session_config.intra_op_parallelism_threads)
            runner = int8_runtime.Int8Runner(servable.signature_defs, servable.run_direct, body)
        except Exception as error:  # noqa: BLE001 - every loader failure fails the load
            servable.session.close()
            raise ServingError(Code.INTERNAL, f"int8 version {path}: {error}") from None

        def run(feeds, fetches, timeout_ms):
            try:
                return runner.run(feeds, fetches, timeout_ms)
            except int8_runtime.Int8Error as error:
                raise ServingError(Code.INVALID_ARGUMENT, str(error)) from None
            except RuntimeError as error:  # OpenVINO's inference errors
                raise ServingError(Code.INTERNAL, str(error)) from None

        public = meta_graph_pb2.MetaGraphDef()
        public.CopyFrom(servable.meta_graph_def)
        for key in runner.helpers:
            del public.signature_def[key]
        servable.path = path
        servable.meta_graph_def, servable.signature_defs = public, public.signature_def
        servable.run_direct = servable.runner = run
        servable.request_budget = max(MIN_REQUEST_BUDGET, int8_runtime.body_bytes(path))
        return servable

    def _output(self, tensor_name: str):
        output = self._outputs.get(tensor_name)
        if output is None:
            with self._outputs_lock:
                try:
                    tensor = self.graph.get_tensor_by_name(tensor_name)
                except (KeyError, ValueError):
                    raise ServingError(
                        Code.INVALID_ARGUMENT,
                        f"Tensor {tensor_name}, specified in either feed_devices or "
                        "fetch_devices was not found in the Graph",
                    ) from None
                output = tensor._as_tf_output()
                self._outputs[tensor_name] = output
        return output

    def run_direct(
        self, feeds: dict[str, np.ndarray], fetches: Sequence[str], timeout_ms: int | None
    ) -> list[np.ndarray]:
        """``Session::Run`` with ``RunOptions.timeout_in_ms`` (``None``: no timeout)."""
        feed_map = {self._output(name): value for name, value in feeds.items()}
        fetch_list = [self._output(name) for name in fetches]
        options = None
        if timeout_ms is not None:
            run_options = config_pb2.RunOptions(timeout_in_ms=max(int(timeout_ms), 1))
            options = tf_session.TF_NewBufferFromString(run_options.SerializeToString())
        try:
            results = tf_session.TF_SessionRun_wrapper(
                self.session._session, options, feed_map, fetch_list, [], None
            )
        except tf.errors.OpError as error:
            raise from_tf_error(error) from None
        finally:
            if options is not None:
                tf_session.TF_DeleteBuffer(options)
        return [_as_array(result) for result in results]

    def acquire(self) -> bool:
        with self._refs_cond:
            if self._closed:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._refs_cond:
            self._refs -= 1
            self._refs_cond.notify_all()

    def quiesce(self, timeout: float | None = None) -> bool:
        """Refuses new requests and waits for those in flight (False: still running)."""
        with self._refs_cond:
            self._closed = True
            return self._refs_cond.wait_for(lambda: self._refs == 0, timeout)

    def close(self) -> None:
        """Waits for in-flight requests, then frees the session."""
        self.quiesce()
        self.session.close()
