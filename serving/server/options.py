"""``tensorflow_model_server``'s flags, as one table for ``python -m serving.server`` and
``keras-vit serve``.

Both ``--port=8500`` and ``--port 8500`` work; boolean flags accept
``--enable_batching``, ``--enable_batching=true`` and ``--enable_batching false``.
Defaults are TF Serving's, except ``--host`` (ours): the server binds to
127.0.0.1 unless told otherwise, where TF Serving listens on 0.0.0.0.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

_CPUS = os.cpu_count() or 1


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t"):
        return True
    if value in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclass
class ServerOptions:
    """Every supported flag, with TF Serving's defaults."""

    port: int = 8500
    grpc_socket_path: str = ""
    host: str = "127.0.0.1"
    rest_api_port: int = 0
    rest_api_num_threads: int = 4 * _CPUS
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    rest_api_max_request_bytes: int = 64 * 1024 * 1024
    rest_api_max_bytes_in_flight: int = 512 * 1024 * 1024
    rest_api_max_connections: int = 1024
    rest_api_idle_timeout_in_ms: int = 50000
    rest_api_header_timeout_in_ms: int = 10000
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    enable_grpc_healthcheck_service: bool = False
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 4 * _CPUS
    grpc_max_concurrent_rpcs: int = 0
    grpc_default_timeout_in_ms: int = 30000
    max_request_tensor_bytes: int = 0
    max_request_elements: int = 4096
    max_decode_bytes_in_flight: int = 768 * 1024 * 1024
    saved_model_tags: str = "serve"
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    max_num_load_retries: int = 5
    num_load_threads: int = 4
    load_retry_interval_micros: int = 60 * 1000 * 1000
    allow_version_labels_for_unavailable_models: bool = False
    enable_signature_method_name_check: bool = False
    enable_serialization_as_tensor_content: bool = False
    shutdown_grace_seconds: float = 30.0
    version: bool = False


# name -> help text (TF Serving's where the flag is TF Serving's).
_HELP = {
    "port": "Port to listen on for gRPC API (0: no TCP gRPC; needs --grpc_socket_path)",
    "grpc_socket_path": "If non-empty, listen to a UNIX socket for gRPC API on the given path. "
    "Can be either relative or absolute path.",
    "host": "Address to bind the gRPC and HTTP/REST ports to. Default 127.0.0.1: the server "
    "binds to 127.0.0.1 (this machine only) unless told otherwise, unlike TF Serving, which "
    "listens on 0.0.0.0. Use --host=0.0.0.0 to accept remote clients.",
    "rest_api_port": "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will "
    "not be exported. This port must be different than the one specified in --port.",
    "rest_api_num_threads": "Number of threads for HTTP/REST API processing. If not set, will "
    "be auto set based on number of CPUs.",
    "rest_api_timeout_in_ms": "Timeout for HTTP/REST API calls. Here it also bounds, in "
    "total, the upload of a request body (HTTP 408 past it) and the download of a response.",
    "rest_api_enable_cors_support": "Enable CORS headers in response",
    "rest_api_max_request_bytes": "Largest accepted HTTP request body, after gzip inflation "
    "(not a TF Serving flag); larger bodies get HTTP 413.",
    "rest_api_max_bytes_in_flight": "Bytes all REST requests in progress may hold together: "
    "their bodies plus what parsing them takes (not a TF Serving flag); a request that does "
    "not get its share within 3 s gets HTTP 429.",
    "rest_api_max_connections": "HTTP connections open at once on the REST port (not a TF "
    "Serving flag). At the limit a new connection closes the oldest idle one (or the oldest "
    "one still sending headers); when none is, it gets HTTP 503 and is closed. 0: as many as "
    "the open-files limit allows.",
    "rest_api_idle_timeout_in_ms": "An HTTP connection that sends nothing for this long (a "
    "new one, or one kept alive between requests) is closed (not a TF Serving flag; "
    "libevent's default read timeout is 50 s). 0: never.",
    "rest_api_header_timeout_in_ms": "An HTTP request's headers must all arrive within this "
    "time of its first byte, however slowly they trickle in; past it: HTTP 408 (not a TF "
    "Serving flag; 0: no limit). The body must then arrive within --rest_api_timeout_in_ms.",
    "model_name": "name of model (ignored if --model_config_file flag is set)",
    "model_base_path": "path to export (ignored if --model_config_file flag is set, otherwise "
    "required): the directory holding the numbered version directories, never a version "
    "directory itself. A relative path is resolved against the working directory; any "
    "filesystem TensorFlow has (gs://, ...) works.",
    "model_config_file": "If non-empty, read an ascii ModelServerConfig protobuf from the "
    "supplied file name, and serve the models in that file. This config file can be used to "
    "specify multiple models to serve and other advanced parameters including non-default "
    "version policy. (If used, --model_name, --model_base_path are ignored.)",
    "model_config_file_poll_wait_seconds": "Interval in seconds between each poll of the "
    "filesystem for model_config_file. If unset or set to zero, poll will be done exactly once "
    "and not periodically.",
    "file_system_poll_wait_seconds": "Interval in seconds between each poll of the filesystem "
    "for new model version. If set to zero poll will be exactly done once and not periodically.",
    "enable_batching": "enable batching",
    "batching_parameters_file": "If non-empty, read an ascii BatchingParameters protobuf from "
    "the supplied file name and use the contained values instead of the defaults.",
    "monitoring_config_file": "If non-empty, read an ascii MonitoringConfig protobuf from the "
    "supplied file name",
    "enable_model_warmup": "Enables model warmup, which triggers lazy initializations (such as "
    "TF optimizations) at load time, to reduce first request latency.",
    "num_request_iterations_for_warmup": "Number of times a request is iterated during warmup "
    "replay. This value is used only if > 0.",
    "enable_grpc_healthcheck_service": "Enable the standard gRPC healthcheck service.",
    "grpc_channel_arguments": "A comma separated list of arguments to be passed to the grpc "
    "server. (e.g. grpc.max_connection_age_ms=2000) They replace this server's defaults for "
    "the same keys (connection cap, idle timeout, keepalive and stream limits; see "
    "docs/server.md).",
    "grpc_max_threads": "Max gRPC server threads to handle grpc messages (here: the worker "
    "threads that compute the answers; the calls are read on the server's asyncio loop).",
    "grpc_max_concurrent_rpcs": "RPCs in progress at once, past which calls get "
    "RESOURCE_EXHAUSTED, as TF Serving's resource quota answers (not a TF Serving flag). "
    "0: twice --grpc_max_threads.",
    "grpc_default_timeout_in_ms": "Session run timeout of a gRPC call whose client set no "
    "deadline (not a TF Serving flag; 0: none).",
    "max_request_tensor_bytes": "Bytes the decoded input tensors of one request may take, "
    "checked from each tensor's shape and dtype before anything is allocated; larger "
    "requests get INVALID_ARGUMENT naming the input (not a TF Serving flag). 0: sized to the "
    "model: its variables' bytes, at least 64 MiB.",
    "max_request_elements": "String elements (encoded images, serialized tf.Examples), and "
    "images sent as pixels to a keras-vit export, one request may hold, counted before any "
    "of them is read; more get INVALID_ARGUMENT (HTTP 400) naming this flag (not a TF "
    "Serving flag). Each costs the model's decode stage time and memory whatever its size. "
    "0: no limit.",
    "max_decode_bytes_in_flight": "Estimated memory all requests in progress may hold "
    "together in the model's decode stage, gRPC and REST alike (not a TF Serving flag): per "
    "string element a fixed overhead plus the model-input images made of it, plus the pixels "
    "the image headers declare (read without decoding; bounded by the export's max_pixels). "
    "A request estimated over it alone gets INVALID_ARGUMENT; one that does not get its share "
    "within 3 s gets RESOURCE_EXHAUSTED (HTTP 429). 0: no limit.",
    "saved_model_tags": "Comma-separated set of tags corresponding to the meta graph def to "
    "load from SavedModel.",
    "tensorflow_session_parallelism": "Number of threads to use for running a Tensorflow "
    "session. Auto-configured by default.",
    "tensorflow_intra_op_parallelism": "Number of threads to use to parallelize the execution "
    "of an individual op. Auto-configured by default.",
    "tensorflow_inter_op_parallelism": "Controls the number of operators that can be executed "
    "simultaneously. Auto-configured by default.",
    "max_num_load_retries": "maximum number of times it retries loading a model after the "
    "first failure, before giving up. If set to 0, a load is attempted only once.",
    "num_load_threads": "The number of threads in the thread-pool used to load servables. "
    "Models load in parallel; a failed load waits for its retry without holding a thread, "
    "so one failing model never stalls the others. (TF Serving's default 0 loads serially; "
    "here 0 means one thread.)",
    "load_retry_interval_micros": "The interval, in microseconds, between each servable load "
    "retry. If set negative, it doesn't wait.",
    "allow_version_labels_for_unavailable_models": "If true, allows assigning unused version "
    "labels to models that are not available yet.",
    "enable_signature_method_name_check": "Enable method_name check for SignatureDef.",
    "enable_serialization_as_tensor_content": "Enable serialization of predict response as "
    "tensor content.",
    "shutdown_grace_seconds": "On SIGTERM/SIGINT, how long to let requests in flight finish "
    "(not a TF Serving flag).",
    "version": "Display version",
}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Adds every flag of :class:`ServerOptions` to ``parser`` (or a new one)."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="python -m serving.server",
            description=DESCRIPTION,
            allow_abbrev=False,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
    defaults = ServerOptions()
    for spec in fields(ServerOptions):
        default = getattr(defaults, spec.name)
        kwargs = {"default": default, "help": _HELP[spec.name], "dest": spec.name}
        if isinstance(default, bool):
            kwargs.update(nargs="?", const=True, type=parse_bool, metavar="BOOL")
        elif isinstance(default, int):
            kwargs.update(type=int, metavar="INT")
        elif isinstance(default, float):
            kwargs.update(type=float, metavar="SECONDS")
        else:
            kwargs.update(type=str, metavar="STR")
        parser.add_argument(f"--{spec.name}", **kwargs)
    return parser


DESCRIPTION = (
    "A local TensorFlow Serving compatible model server: the gRPC and REST APIs of "
    "tensorflow_model_server, its flags and its config files, for SavedModels. It binds to "
    "127.0.0.1 unless --host says otherwise."
)


def check_options(options: ServerOptions) -> str | None:
    """The first of TF Serving's flag checks (``Server::BuildAndStart``) that fails, if any.

    Needs no TensorFlow import, so a bad command line fails fast.
    """
    if problem := environment_problem():
        return problem
    if options.port == 0 and not options.grpc_socket_path:
        return (
            "At least one of server_options.grpc_port or server_options.grpc_socket_path "
            "must be set."
        )
    if not options.model_base_path and not options.model_config_file:
        return "Both server_options.model_base_path and server_options.model_config_file are empty!"
    return None


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """The flags, with Vertex AI's port and model location where it set them (AIP_*)."""
    values = {spec.name: getattr(args, spec.name) for spec in fields(ServerOptions)}
    return apply_environment(ServerOptions(**values))


# Vertex AI's custom-container variables (serving/server/vertex_routes.py answers its routes).
def environment_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """What is wrong with Vertex's variables, if anything (checked with the flags)."""
    port = environ.get("AIP_HTTP_PORT")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return f"AIP_HTTP_PORT must be a port number, got {port!r}"
    for name in ("AIP_HEALTH_ROUTE", "AIP_PREDICT_ROUTE"):
        if port is not None and not environ.get(name, "/").startswith("/"):
            return f"{name} must be a path starting with /, got {environ[name]!r}"
    return None


def apply_environment(
    options: ServerOptions, environ: Mapping[str, str] = os.environ
) -> ServerOptions:
    """``options`` with Vertex's port and model location, where Vertex set them."""
    if environment_problem(environ) is not None:
        return options  # check_options reports it
    if environ.get("AIP_HTTP_PORT"):
        options = replace(options, rest_api_port=int(environ["AIP_HTTP_PORT"]))
    if environ.get("AIP_STORAGE_URI"):
        options = replace(options, model_base_path=environ["AIP_STORAGE_URI"], model_config_file="")
    return options
