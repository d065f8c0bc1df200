"""Builds and runs the whole server from :class:`ServerOptions` (TF Serving's ``server.cc``)."""

from __future__ import annotations

import asyncio
import math
import os
import resource
import threading
import time

import grpc
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.server import admission, warmup
from serving.server.batching import BatchingOptions, BatchScheduler
from serving.server.core import CoreOptions, ServerCore
from serving.server.extra_protos import BatchingParameters, MonitoringConfig
from serving.server.grpc_service import ModelService, PredictionService
from serving.server.http_server import RestLimits, RestServer
from serving.server.inference import InferenceContext
from serving.server.logs import get_logger
from serving.server.loop import LoopThread, Workers
from serving.server.metrics import DEFAULT_PROMETHEUS_PATH, ServingMetrics
from serving.server.options import ServerOptions, check_options
from serving.server.rest_api import RestApi
from serving.server.servable import Servable
from serving.server.status import Code, ServingError, invalid_argument
from serving.server.vertex_routes import VertexRoutes

log = get_logger()
DEFAULT_INTER_OP_THREADS = max(8, 4 * (os.cpu_count() or 1))
_HEALTH_SERVICES = (
    "",
    "ModelService",
    "PredictionService",
    "tensorflow.serving.ModelService",
    "tensorflow.serving.PredictionService",
)


def read_text_proto(path: str, message):
    """``ParseProtoTextFile``: TF Serving's errors for unreadable or unparsable files."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ServingError(Code.NOT_FOUND, f"{path}; {error.strerror}") from None
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        log.error("Error parsing text-format %s: %s", message.DESCRIPTOR.full_name, error)
        raise invalid_argument(f"Invalid protobuf file: '{path}'") from None


def resolve_base_path(base_path: str) -> str:
    """A relative ``--model_base_path`` is taken from the working directory (said in the log)."""
    if "://" in base_path or os.path.isabs(base_path):
        return base_path
    resolved = os.path.abspath(base_path)
    log.info(
        "Relative --model_base_path %s resolved against the working directory %s: %s",
        base_path,
        os.getcwd(),
        resolved,
    )
    return resolved


def check_base_path(name: str, base_path: str) -> None:
    """Start-up checks TF Serving lacks: a reachable filesystem, not a version folder.

    Raises :class:`ServingError` with the fix spelled out.
    """
    try:
        exists = tf.io.gfile.exists(base_path)
        is_version = exists and any(
            tf.io.gfile.exists(f"{base_path.rstrip('/')}/{file}")
            for file in ("saved_model.pb", "saved_model.pbtxt")
        )
    except tf.errors.UnimplementedError as error:
        scheme = base_path.split("://", 1)[0] if "://" in base_path else "file"
        raise ServingError(
            Code.FAILED_PRECONDITION,
            f"Model {name}: base path {base_path} needs the '{scheme}' filesystem, which "
            f"this TensorFlow does not provide ({error.message}). Install the package that "
            "registers it (e.g. tensorflow-io for s3:// or hdfs://) or copy the model to a "
            "local path.",
        ) from None
    except tf.errors.OpError as error:
        raise ServingError(
            Code.FAILED_PRECONDITION,
            f"Model {name}: cannot reach base path {base_path}: {error.message}",
        ) from None
    if is_version:
        parent = base_path.rstrip("/").rsplit("/", 1)[0] or "/"
        raise invalid_argument(
            f"Model {name}: base path {base_path} is a SavedModel version folder (it holds "
            "saved_model.pb). The base path is the folder that holds the numbered version "
            f"folders: use --model_base_path={parent} (or base_path: '{parent}' in the model "
            "config file)."
        )


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    log.info(
        "Building single TensorFlow model file config:  model_name: %s model_base_path: %s",
        name,
        base_path,
    )
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    return config


# The gRPC server's options. TF Serving sets only the message sizes (INT32_MAX); the
# rest are ours, so that connections cannot pile up: a cap on open connections, idle
# connections closed (GOAWAY), a deadline for a new connection's HTTP/2 handshake, and
# keepalive pings that find dead peers. --grpc_channel_arguments replaces any of them.
GRPC_SERVER_DEFAULTS: dict[str, object] = {
    "grpc.max_send_message_length": 2**31 - 1,
    "grpc.max_receive_message_length": 2**31 - 1,
    # Past this many open connections, new ones are closed at once (lowered to what the
    # open-files limit leaves next to the REST port's connections).
    "grpc.max_allowed_incoming_connections": 8192,
    # A connection without calls for this long gets GOAWAY (clients reconnect on demand).
    "grpc.max_connection_idle_ms": 120_000,
    # A new connection must complete its HTTP/2 preface and settings within this time.
    "grpc.server_handshake_timeout_ms": 10_000,
    # Calls at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    "grpc.max_concurrent_streams": 100,
    # Ping each client every 2 min (also during long calls without data); no answer
    # within 20 s closes the connection.
    "grpc.keepalive_time_ms": 120_000,
    "grpc.keepalive_timeout_ms": 20_000,
    "grpc.http2.max_pings_without_data": 0,
}


# File descriptors kept for everything but connections (model files, logs, pipes).
_SPARE_DESCRIPTORS = 256


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Raises the soft open-files limit towards the hard one (as Go programs do), up to
    ``wanted``; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def _grpc_options(text: str, open_files: int = 1 << 20, rest_connections: int = 0):
    """The server's options: :data:`GRPC_SERVER_DEFAULTS`, replaced key by key by ``text``
    (``--grpc_channel_arguments``: ``key=value,key=value``; integers stay integers).

    The default connection cap is lowered to what ``open_files`` leaves after the REST
    port's ``rest_connections``."""
    options = dict(GRPC_SERVER_DEFAULTS)
    room = max(open_files - max(rest_connections, 0) - _SPARE_DESCRIPTORS, 64)
    cap = "grpc.max_allowed_incoming_connections"
    options[cap] = min(options[cap], room)
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        try:
            options[key.strip()] = int(value)
        except ValueError:
            options[key.strip()] = value
    return list(options.items())


class Server:
    """A running model server: gRPC, optional REST, model polling, batching, metrics."""

    def __init__(self) -> None:
        self.metrics = ServingMetrics()
        self.core: ServerCore | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._network: LoopThread | None = None
        self._grpc_server: grpc.aio.Server | None = None
        self._grpc_workers: Workers | None = None
        self._rest_server: RestServer | None = None
        self._health: health.aio.HealthServicer | None = None
        self._batcher: BatchScheduler | None = None
        self._config_poller: threading.Thread | None = None
        self._stopped = threading.Event()
        self._options: ServerOptions | None = None

    # ------------------------------------------------------------------ start

    def build_and_start(self, options: ServerOptions) -> None:
        """Starts everything; raises :class:`ServingError` with TF Serving's startup errors."""
        self._options = options
        problem = check_options(options)
        if problem:
            raise invalid_argument(problem)
        if options.model_config_file:
            config = read_text_proto(
                options.model_config_file, model_server_config_pb2.ModelServerConfig()
            )
        else:
            config = single_model_config(
                options.model_name, resolve_base_path(options.model_base_path)
            )
        for model in config.model_config_list.config:
            if model.base_path:
                check_base_path(model.name, model.base_path)
        batching = None
        if options.enable_batching:
            if options.batching_parameters_file:
                params = read_text_proto(options.batching_parameters_file, BatchingParameters())
                batching = BatchingOptions.from_proto(params)
            else:
                batching = BatchingOptions(thread_pool_name="model_server_batch_threads")
            batching.validate()
        elif options.batching_parameters_file:
            raise invalid_argument(
                "server_options.batching_parameters_file is set without setting "
                "server_options.enable_batching to true."
            )
        monitoring = MonitoringConfig()
        if options.monitoring_config_file:
            monitoring = read_text_proto(options.monitoring_config_file, MonitoringConfig())
        session_config = self._session_config(options)

        self.context = InferenceContext(
            self.metrics,
            signature_method_name_check=options.enable_signature_method_name_check,
            max_request_tensor_bytes=max(options.max_request_tensor_bytes, 0),
            costs=admission.CostBudget(
                max(options.max_request_elements, 0), max(options.max_decode_bytes_in_flight, 0)
            ),
        )
        if batching is not None:
            self._batcher = BatchScheduler(batching, self.metrics)
        self.core = ServerCore(
            CoreOptions(
                file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
                saved_model_tags=tuple(t for t in options.saved_model_tags.split(",") if t),
                session_config=session_config,
                max_num_load_retries=max(options.max_num_load_retries, 0),
                load_retry_interval_seconds=max(options.load_retry_interval_micros, 0) / 1e6,
                allow_version_labels_for_unavailable_models=(
                    options.allow_version_labels_for_unavailable_models
                ),
                num_load_threads=options.num_load_threads or 1,
            ),
            self._load_servable,
            self._unload_servable,
        )
        try:
            self.core.reload_config(config)
        except ServingError:
            self._stop_quietly()
            raise
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._config_poller = threading.Thread(
                target=self._poll_config_file, name="config_poller", daemon=True
            )
            self._config_poller.start()
        self._network = LoopThread()
        try:
            self._network.run(self._serve(options, monitoring), timeout=60)
        except ServingError:
            self._stop_quietly()
            raise

    @staticmethod
    def _session_config(options: ServerOptions) -> config_pb2.ConfigProto:
        intra = options.tensorflow_intra_op_parallelism
        inter = options.tensorflow_inter_op_parallelism
        both = options.tensorflow_session_parallelism
        if intra > 0 and inter > 0 and both > 0:
            raise invalid_argument(
                "Either configure server_options.tensorflow_session_parallelism or "
                "(server_options.tensorflow_intra_op_parallelism, "
                "server_options.tensorflow_inter_op_parallelism). Cannot configure both."
            )
        if intra > 0 or inter > 0:
            return config_pb2.ConfigProto(
                intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter
            )
        if both > 0:
            return config_pb2.ConfigProto(
                intra_op_parallelism_threads=both, inter_op_parallelism_threads=both
            )
        # Unset: more inter-op threads than cores (TensorFlow's default), so that ops that
        # block for long (a slow image decode) cannot hold every thread while other
        # requests wait (benchmarks/results/abuse.md: two slow GIF decodes made normal
        # requests wait 28.8 s at p99 with 2 threads, 0.1 s with 8).
        return config_pb2.ConfigProto(inter_op_parallelism_threads=DEFAULT_INTER_OP_THREADS)

    async def _serve(self, options: ServerOptions, monitoring) -> None:
        """On the loop: gRPC and (if asked) REST, both on this loop."""
        threads = max(options.grpc_max_threads, 1)
        self._grpc_workers = Workers(threads, "grpc_worker")
        server = grpc.aio.server(
            options=_grpc_options(
                options.grpc_channel_arguments,
                raise_open_files_limit(),
                options.rest_api_max_connections if options.rest_api_port else 0,
            ),
            # Past this many calls in progress: RESOURCE_EXHAUSTED.
            maximum_concurrent_rpcs=options.grpc_max_concurrent_rpcs or 2 * threads,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(
                self.core,
                self.context,
                self._grpc_workers,
                options.enable_serialization_as_tensor_content,
                default_timeout_ms=options.grpc_default_timeout_in_ms or None,
            ),
            server,
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.core, self._grpc_workers), server
        )
        if options.enable_grpc_healthcheck_service:
            self._health = health.aio.HealthServicer()
            for name in _HEALTH_SERVICES:
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"{_bracket(options.host)}:{options.port}"
        where = f"{address} (--port)"
        try:
            if options.port:
                self.grpc_port = server.add_insecure_port(address)
            if options.grpc_socket_path:
                where = f"unix:{options.grpc_socket_path} (--grpc_socket_path)"
                server.add_insecure_port(f"unix:{options.grpc_socket_path}")
        except RuntimeError:
            # TF Serving's text first (operators grep it), then what a user can act on.
            raise invalid_argument(
                f"Failed to BuildAndStart gRPC server: cannot listen on {where}: "
                "another process uses it (or it is not allowed); choose another"
            ) from None
        await server.start()
        self._grpc_server = server
        if options.port:
            log.info("Running gRPC ModelServer at %s ...", address)
        if options.grpc_socket_path:
            socket_path = options.grpc_socket_path
            log.info("Running gRPC ModelServer at UNIX socket unix:%s ...", socket_path)
        if options.rest_api_port:
            self._start_rest(options, monitoring)

    def _start_rest(self, options: ServerOptions, monitoring) -> None:
        shown_host = "localhost" if options.host in ("127.0.0.1", "localhost") else options.host
        address = f"{shown_host}:{options.rest_api_port}"
        if options.rest_api_port == options.port:
            log.error(
                "--rest_api_port cannot be same as --port. Please use a different port for "
                "HTTP/REST API. Skipped exporting HTTP/REST API."
            )
            return
        monitoring_path = None
        if monitoring.prometheus_config.enable:
            monitoring_path = monitoring.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
        rest_api = RestApi(
            self.core,
            self.context,
            options.rest_api_timeout_in_ms,
            options.rest_api_enable_cors_support,
        )
        try:
            self._rest_server = RestServer(
                options.host,
                options.rest_api_port,
                rest_api,
                self.metrics,
                monitoring_path,
                RestLimits(
                    num_threads=options.rest_api_num_threads,
                    max_body_bytes=options.rest_api_max_request_bytes,
                    max_bytes_in_flight=options.rest_api_max_bytes_in_flight,
                    body_timeout_seconds=(options.rest_api_timeout_in_ms or 30000) / 1000,
                    max_connections=options.rest_api_max_connections,
                    idle_timeout_seconds=_seconds(options.rest_api_idle_timeout_in_ms),
                    header_timeout_seconds=_seconds(options.rest_api_header_timeout_in_ms),
                ),
                options.rest_api_enable_cors_support,
                VertexRoutes.from_environment(rest_api),
            )
        except OSError as error:
            log.error("Failed to start HTTP Server at %s: %s", address, error)
            return
        self._rest_server.start()
        self.rest_port = self._rest_server.port
        log.info("Exporting HTTP/REST API at:%s ...", address)

    # ------------------------------------------------------------------ models

    def _load_servable(self, name: str, version: int, path: str) -> Servable:
        options = self._options
        start = time.monotonic()
        core_options = self.core.options
        servable = Servable.load(
            name, version, path, core_options.saved_model_tags, core_options.session_config
        )
        self.metrics.load_attempt_count.increment(path, "success")
        self.metrics.load_latency.increment(path, by=int((time.monotonic() - start) * 1e6))
        if self._batcher is not None:
            servable.runner = self._batcher.runner(servable, servable.run_direct, name)
        if options.enable_model_warmup:
            try:
                warmup.run_warmup(self.context, servable, options.num_request_iterations_for_warmup)
            except BaseException:
                self._unload_servable(servable)
                raise
        return servable

    def _unload_servable(self, servable: Servable) -> None:
        servable.close()
        if self._batcher is not None:
            self._batcher.remove(servable)

    def _poll_config_file(self) -> None:
        options = self._options
        while not self._stopped.wait(options.model_config_file_poll_wait_seconds):
            try:
                config = read_text_proto(
                    options.model_config_file, model_server_config_pb2.ModelServerConfig()
                )
                if config != self.core.config:
                    self.core.reload_config(config)
            except ServingError as error:
                log.error("Failed to reload the model config file: %s", error)

    # ------------------------------------------------------------------ stop

    def abort_startup(self) -> None:
        """Makes a :meth:`build_and_start` still waiting for models raise CANCELLED."""
        if self.core is not None:
            self.core.request_stop()

    def shutdown(self, grace_seconds: float | None = None) -> bool:
        """Stops accepting requests, lets those in flight finish, unloads the models.

        All of it within ``grace_seconds`` (``--shutdown_grace_seconds``) in total.
        Returns False when work was still running at the deadline (a request in the
        TensorFlow runtime, a model load): the caller should then exit the process.
        """
        if self._stopped.is_set():
            return True
        grace = self._options.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        deadline = time.monotonic() + max(grace, 0.0)
        clean = True
        if self._network is not None:
            try:
                clean = self._network.run(self._stop_serving(grace), max(grace, 0.0) + 5)
            except TimeoutError:
                clean = False
        return self._stop_quietly(deadline) and clean

    async def _stop_serving(self, grace: float) -> bool:
        """One await of both servers: no new calls or connections, those in progress
        finish within ``grace`` (gRPC cancels what is left, REST closes it)."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        servers = []
        if self._grpc_server is not None:
            servers.append(self._grpc_server.stop(grace))
        if self._rest_server is not None:
            servers.append(self._rest_server.stop(grace))
        return all(result is not False for result in await asyncio.gather(*servers))

    def _stop_quietly(self, deadline: float | None = None) -> bool:
        self._stopped.set()
        if self._network is not None:
            self._network.stop()
            self._network = None
        if self._grpc_workers is not None:
            self._grpc_workers.shutdown()
        clean = True
        if self.core is not None:
            clean = self.core.stop(deadline)
        if self._batcher is not None:
            self._batcher.stop()
        return clean


def _seconds(milliseconds: int) -> float:
    """A timeout flag in ms; 0 or less: none."""
    return milliseconds / 1000 if milliseconds > 0 else math.inf


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
