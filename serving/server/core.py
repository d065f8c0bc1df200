"""Model management: versions on disk, loading, unloading, labels, status.

The Python counterpart of TF Serving's ``ServerCore`` with its
``FileSystemStoragePathSource`` (version discovery by polling),
``AspiredVersionsManager`` with ``AvailabilityPreservingPolicy`` (a new
version is loaded before an old one is unloaded; a version that fails to load
leaves the old one serving) and ``ServableStateMonitor`` (every version ever
seen, END included, for GetModelStatus).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.server.logs import get_logger
from serving.server.servable import Servable, servable_id
from serving.server.status import Code, ServingError, invalid_argument

log = get_logger()
State = get_model_status_pb2.ModelVersionStatus.State
_VERSION_NAME = re.compile(r"^\s*[+-]?\d+\s*$")
_INT64_MAX = 2**63 - 1


@dataclass
class CoreOptions:
    """The server flags that shape model management."""

    file_system_poll_wait_seconds: float = 1.0
    saved_model_tags: tuple[str, ...] = ("serve",)
    session_config: config_pb2.ConfigProto = field(default_factory=config_pb2.ConfigProto)
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    allow_version_labels_for_unavailable_models: bool = False
    num_load_threads: int = 4


@dataclass
class VersionStatus:
    """What GetModelStatus reports for one version."""

    state: int
    error: ServingError | None = None


class ServableHandle:
    """A servable held for one request; the version is not unloaded until released."""

    def __init__(self, servable: Servable) -> None:
        self.servable = servable

    def __enter__(self) -> Servable:
        return self.servable

    def __exit__(self, *exc) -> None:
        self.servable.release()


class _Model:
    def __init__(self, config: model_server_config_pb2.ModelConfig) -> None:
        self.config = config
        self.loaded: dict[int, Servable] = {}
        self.failed: set[int] = set()
        self.busy: set[int] = set()  # versions being loaded or unloaded
        self.aspired: set[int] = set()  # what the last poll wanted served
        self.removed = False
        self.polled = False


def validate_config_list(config: model_server_config_pb2.ModelServerConfig) -> None:
    """``ServerCore``'s checks of a ``model_config_list``."""
    names = set()
    for model in config.model_config_list.config:
        if model.name in names:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        names.add(model.name)
    for model in config.model_config_list.config:
        if not _is_absolute_uri(model.base_path):
            raise invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
    for model in config.model_config_list.config:
        platform = model.model_platform
        if model.model_type:
            if platform:
                raise invalid_argument(
                    "Illegal setting both model_type(deprecated) and model_platform."
                )
            platform = "tensorflow" if model.model_type == 1 else "other"
        if not platform:
            raise invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if platform != "tensorflow":
            raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")


def _join(base: str, child: str) -> str:
    return base.rstrip("/") + "/" + child if "://" in base else os.path.join(base, child)


def _wait_threads(pool: futures.ThreadPoolExecutor, timeout: float | None) -> bool:
    """Waits for the pool's threads to end (after ``shutdown(wait=False)``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in list(getattr(pool, "_threads", ())):
        thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        if thread.is_alive():
            return False
    return True


def _is_absolute_uri(path: str) -> bool:
    return path.startswith("/") or bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path))


def aspired_versions(
    model: model_server_config_pb2.ModelConfig, children: list[str]
) -> tuple[dict[int, str], list[str]]:
    """Version directories to serve under the model's policy, and warnings to log."""
    warnings: list[str] = []
    versions: dict[int, str] = {}
    for child in sorted(children):
        if not _VERSION_NAME.match(child):
            continue
        number = int(child)
        if not -_INT64_MAX - 1 <= number <= _INT64_MAX:
            continue
        if number in versions:
            warnings.append(
                f"Found multiple version directories for version {number} of servable "
                f"{model.name}: {versions[number]} and {child}; using {versions[number]}"
            )
            continue
        versions[number] = child
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        chosen = sorted(versions)
    elif kind == "specific":
        wanted = list(policy.specific.versions)
        for version in wanted:
            if version not in versions:
                warnings.append(
                    f"Version {version} of servable {model.name} , which was requested to be "
                    "served as a 'specific' version in the servable's version policy, was not "
                    "found in the file system"
                )
        chosen = [v for v in wanted if v in versions]
    else:
        count = max(policy.latest.num_versions, 1) if kind == "latest" else 1
        chosen = sorted(versions)[-count:]
    return {v: versions[v] for v in chosen}, warnings


class ServerCore:
    """Loads, serves and unloads the versions of the configured models."""

    def __init__(
        self,
        options: CoreOptions,
        load_servable: Callable[[str, int, str], Servable],
        unload_servable: Callable[[Servable], None],
    ) -> None:
        self.options = options
        self._load_servable = load_servable
        self._unload_servable = unload_servable
        self._models: dict[str, _Model] = {}
        self._statuses: dict[str, dict[int, VersionStatus]] = {}
        self._labels: dict[str, dict[str, int]] | None = None
        self._config = model_server_config_pb2.ModelServerConfig()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._config_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        # Loads run here; a failed load waits for its retry on a timer, not in a thread
        # of this pool, so one failing model never stalls the others.
        self._loader = futures.ThreadPoolExecutor(
            max_workers=max(options.num_load_threads, 1), thread_name_prefix="load"
        )
        self._retry_timers: set[threading.Timer] = set()

    # ------------------------------------------------------------------ configuration

    @property
    def config(self) -> model_server_config_pb2.ModelServerConfig:
        return self._config

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """``ServerCore::ReloadConfig``: waits until the listed models are available."""
        with self._config_lock:
            if config.WhichOneof("config") is None:
                log.info("Taking no action for empty config.")
                return
            if config.WhichOneof("config") != "model_config_list":
                raise ServingError(
                    Code.FAILED_PRECONDITION,
                    "Cannot transition to requested config. It is only legal to transition from "
                    "one ModelConfigList to another.",
                )
            validate_config_list(config)
            log.info("Adding/updating models.")
            with self._lock:
                wanted = {model.name: model for model in config.model_config_list.config}
                for name, model in self._models.items():
                    if name not in wanted:
                        model.removed = True
                for name, model_config in wanted.items():
                    log.info(" (Re-)adding model: %s", name)
                    model = self._models.get(name)
                    if model is None:
                        self._models[name] = _Model(model_config)
                    else:
                        model.config = model_config
                        model.removed = False
                self._config = config
            self.poll()
            self._start_poller()
            self._wait_until_available(list(wanted))
            self._update_labels(config)

    def _wait_until_available(self, names: list[str]) -> None:
        failures = []
        with self._changed:
            for name in names:
                while not self._stopping.is_set():
                    model = self._models.get(name)
                    if model is None:
                        break
                    # Loads run in parallel: wait until every aspired version settled.
                    if model.polled and not model.busy and (model.loaded or model.failed):
                        if not model.loaded:
                            failures.append(name)
                        break
                    self._changed.wait(0.5)
        if self._stopping.is_set():
            raise ServingError(Code.CANCELLED, "Server is shutting down")
        if failures:
            parts = []
            for name in failures:
                for version in sorted(self._models[name].failed):
                    status = self._statuses[name][version]
                    reason = f" due to error: {status.error}" if status.error else ""
                    parts.append(f"{{{servable_id(name, version)}{reason}}}, ")
            raise ServingError(
                Code.UNKNOWN,
                f"{len(failures)} model(s) did not become available: {{{''.join(parts)}}}",
            )

    def _update_labels(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """``UpdateModelVersionLabelMap``: labels may only name available versions."""
        new_labels: dict[str, dict[str, int]] = {}
        with self._lock:
            old = self._labels or {}
            for model_config in config.model_config_list.config:
                labels = dict(model_config.version_labels)
                model = self._models[model_config.name]
                for label, version in labels.items():
                    existing = old.get(model_config.name, {}).get(label)
                    moved = existing is not None and existing != version
                    allow = self.options.allow_version_labels_for_unavailable_models
                    if (not allow or moved) and version not in model.loaded:
                        raise ServingError(
                            Code.FAILED_PRECONDITION,
                            f"Request to assign label to version {version} of model "
                            f"{model_config.name}, which is not currently available for inference",
                        )
                if labels:
                    new_labels[model_config.name] = labels
            self._labels = new_labels

    # ------------------------------------------------------------------ polling

    def _start_poller(self) -> None:
        if self._poller is not None or self.options.file_system_poll_wait_seconds <= 0:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="fs_poller", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.options.file_system_poll_wait_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a poll failure must not stop polling
                log.exception("File system polling failed")

    def poll(self) -> None:
        """One pass over every model: discover versions, load new ones, unload old ones."""
        with self._poll_lock:
            with self._lock:
                models = list(self._models.items())
            for name, model in models:
                if self._stopping.is_set():
                    return
                if model.removed:
                    self._unload_all(name, model)
                    continue
                self._poll_model(name, model)

    def _poll_model(self, name: str, model: _Model) -> None:
        base_path = model.config.base_path
        try:
            children = [child.rstrip("/") for child in tf.io.gfile.listdir(base_path)]
        except (tf.errors.OpError, OSError) as error:
            log.error(
                "FileSystemStoragePathSource encountered a filesystem access error: Could not "
                "find base path %s for servable %s with error %s",
                base_path,
                name,
                getattr(error, "message", error),
            )
            with self._changed:
                model.polled = True
                self._changed.notify_all()
            return
        aspired, warnings = aspired_versions(model.config, children)
        for warning in warnings:
            log.warning("%s", warning)
        if not aspired:
            log.warning(
                "No versions of servable %s found under base path %s. Did you forget to name "
                "your leaf directory as a number (eg. '/1/')?",
                name,
                base_path,
            )
        with self._lock:
            model.aspired = set(aspired)
            # A failed version is retried only after it left the aspired set.
            model.failed &= model.aspired
            to_load = [v for v in sorted(aspired, reverse=True) if v not in model.loaded]
            to_load = [v for v in to_load if v not in model.failed and v not in model.busy]
            model.busy.update(to_load)
        for version in to_load:
            path = _join(base_path, aspired[version])
            log.info(
                "File-system polling update: Servable:%s; Servable path: %s; Polling frequency: %g",
                servable_id(name, version),
                path,
                self.options.file_system_poll_wait_seconds,
            )
            self._set_state(name, version, State.START)
            log.info("Approving load for servable version %s", servable_id(name, version))
            self._set_state(name, version, State.LOADING)
            self._submit_load(name, model, version, path, 0, None)
        self._retire(name, model)
        with self._changed:
            model.polled = True
            self._changed.notify_all()

    def _retire(self, name: str, model: _Model) -> None:
        """Availability preserving: old versions go only once a wanted one serves."""
        with self._lock:
            to_unload = []
            if any(v in model.loaded for v in model.aspired):
                to_unload = [v for v in model.loaded if v not in model.aspired]
        for version in to_unload:
            self._unload(name, model, version)

    def _set_state(self, name: str, version: int, state: int, error=None) -> None:
        with self._changed:
            self._statuses.setdefault(name, {})[version] = VersionStatus(state, error)
            self._changed.notify_all()

    def _submit_load(self, name, model, version, path, attempt, error) -> None:
        if self._stopping.is_set():
            self._give_up(name, model, version, error or ServingError(Code.CANCELLED, "stopped"))
            return
        try:
            self._loader.submit(self._load, name, model, version, path, attempt)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._give_up(name, model, version, ServingError(Code.CANCELLED, "stopped"))

    def _load(self, name: str, model: _Model, version: int, path: str, attempt: int) -> None:
        """One load attempt (in the load pool); a failure schedules the next attempt."""
        if attempt:
            log.info(
                "Retrying load on servable version %s retry: %d",
                servable_id(name, version),
                attempt,
            )
        else:
            log.info("Loading servable version %s", servable_id(name, version))
        try:
            servable = self._load_servable(name, version, path)
        except ServingError as failure:
            error = failure
        except Exception as failure:  # noqa: BLE001 - report, never crash the loader
            error = ServingError(Code.UNKNOWN, f"{type(failure).__name__}: {failure}")
        else:
            with self._changed:
                model.loaded[version] = servable
                model.busy.discard(version)
                self._statuses.setdefault(name, {})[version] = VersionStatus(State.AVAILABLE)
                self._changed.notify_all()
            log.info("Successfully loaded servable version %s", servable_id(name, version))
            self._retire(name, model)
            return
        log.error("Loading servable: %s failed: %s", servable_id(name, version), error)
        if attempt >= self.options.max_num_load_retries or self._stopping.is_set():
            self._give_up(name, model, version, error)
            return
        timer = threading.Timer(
            self.options.load_retry_interval_seconds,
            self._retry,
            (name, model, version, path, attempt + 1, error),
        )
        timer.daemon = True
        with self._lock:
            self._retry_timers.add(timer)
        timer.start()

    def _retry(self, name, model, version, path, attempt, error) -> None:
        with self._lock:
            self._retry_timers = {t for t in self._retry_timers if t.is_alive()}
            # AspiredVersionsManager cancels the retries of a version no longer aspired
            # (BasicManager::CancelLoadServableRetry): it ends with its last error.
            cancelled = model.removed or version not in model.aspired
        if cancelled:
            log.info("Retrying of Loading servable: %s was cancelled.", servable_id(name, version))
            self._give_up(name, model, version, error)
            return
        self._submit_load(name, model, version, path, attempt, error)

    def _give_up(self, name: str, model: _Model, version: int, error: ServingError) -> None:
        with self._changed:
            model.failed.add(version)
            model.busy.discard(version)
            self._statuses.setdefault(name, {})[version] = VersionStatus(State.END, error)
            self._changed.notify_all()

    def _unload(self, name: str, model: _Model, version: int, timeout=None) -> bool:
        """Unloads one version; with a ``timeout``, gives up on requests still running."""
        with self._lock:
            servable = model.loaded.pop(version, None)
            if servable is None:
                return True
            model.busy.add(version)
        self._set_state(name, version, State.UNLOADING)
        log.info("Quiescing servable version %s", servable_id(name, version))
        if not servable.quiesce(timeout):
            log.warning(
                "Servable version %s still has requests running; not unloaded",
                servable_id(name, version),
            )
            return False
        log.info("Done quiescing servable version %s", servable_id(name, version))
        log.info("Unloading servable version %s", servable_id(name, version))
        try:
            self._unload_servable(servable)
        finally:
            with self._lock:
                model.busy.discard(version)
            self._set_state(name, version, State.END)
            log.info("Done unloading servable version %s", servable_id(name, version))
        return True

    def _unload_all(self, name: str, model: _Model) -> None:
        for version in sorted(model.loaded):
            self._unload(name, model, version)
        with self._lock:
            if self._models.get(name) is model:
                del self._models[name]

    # ------------------------------------------------------------------ requests

    def get_servable(self, model_spec: model_pb2.ModelSpec) -> ServableHandle:
        """``ServerCore::GetServableHandle`` with TF Serving's error texts."""
        name = model_spec.name
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = model_spec.WhichOneof("version_choice")
        version = None
        if choice == "version":
            version = model_spec.version.value
        elif choice == "version_label":
            label = model_spec.version_label
            with self._lock:
                if self._labels is None:
                    raise ServingError(Code.UNAVAILABLE, f"Model labels does not init yet.{label}")
                version = self._labels.get(name, {}).get(label)
            if version is None:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
        with self._lock:
            model = self._models.get(name)
            servable = None
            if model is not None and not model.removed:
                if version is None:
                    if model.loaded:
                        servable = model.loaded[max(model.loaded)]
                else:
                    servable = model.loaded.get(version)
            if servable is not None and servable.acquire():
                return ServableHandle(servable)
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise ServingError(Code.NOT_FOUND, f"Servable not found for request: {request}")

    def model_status(self, name: str, version: int | None) -> list[tuple[int, VersionStatus]]:
        """``GetModelStatusImpl``: versions (descending) with their state, END included."""
        with self._lock:
            statuses = dict(self._statuses.get(name, {}))
        if version is not None:
            if version not in statuses:
                raise ServingError(
                    Code.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            return [(version, statuses[version])]
        if not statuses:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        return sorted(statuses.items(), reverse=True)

    def status_response(
        self, name: str, version: int | None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """:meth:`model_status` as the ``GetModelStatus`` answer (gRPC and REST)."""
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, status in self.model_status(name, version):
            entry = response.model_version_status.add(version=number, state=status.state)
            entry.status.SetInParent()
            if status.error is not None:
                entry.status.error_code = int(status.error.code)
                entry.status.error_message = status.error.message
        return response

    def request_stop(self) -> None:
        """Makes a startup that waits for models give up (safe from a signal handler)."""
        self._stopping.set()

    def stop(self, deadline: float | None = None) -> bool:
        """Stops polling and unloads every version once its requests finish.

        With a ``deadline`` (``time.monotonic()``), gives up waiting there: a poller
        busy loading, or a version with requests still running, is left as it is (the
        process is about to exit). Returns False if anything was left.
        """
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()

        def left() -> float | None:
            return None if deadline is None else max(deadline - time.monotonic(), 0.0)

        with self._lock:
            for timer in self._retry_timers:
                timer.cancel()
        self._loader.shutdown(wait=False, cancel_futures=True)
        if self._poller is not None:
            self._poller.join(left())
            if self._poller.is_alive():
                log.warning("Model polling was still running at the end of the shutdown grace")
                return False
        if not _wait_threads(self._loader, left()):
            log.warning("A model load was still running at the end of the shutdown grace")
            return False
        if not self._poll_lock.acquire(timeout=-1 if deadline is None else left()):
            log.warning("Model polling was still running at the end of the shutdown grace")
            return False
        clean = True
        try:
            with self._lock:
                models = list(self._models.items())
            for name, model in models:
                for version in sorted(model.loaded):
                    clean &= self._unload(name, model, version, left())
        finally:
            self._poll_lock.release()
        return clean
