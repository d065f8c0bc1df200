"""Shell scripts whose ``keras-vit`` commands run inside the test process.

Every ``keras-vit`` of a documented command used to be a new interpreter importing
TensorFlow (seconds each). :class:`InProcessCli` runs a shell command with ``bash`` as
written (pipes, redirections, variables and exit statuses as a reader gets them), with a
``keras-vit`` on its ``PATH`` (``cli_client.py``) that hands the command, with its own
standard streams, working directory and environment, to this process, which runs
``keras_vit.cli.main(argv)`` in its main thread and answers the exit status.

Commands for which a fresh process is the point, or that change process-wide state
that cannot be put back (``serve``, ``ui``, ``--verbose``, ``--help``, ``train
--strategy/--devices`` or with ``TF_CONFIG``, ``batch-predict --direct_running_mode``),
are declined (``fresh``): the client then becomes ``python -m keras_vit ...`` as
before. What a command reads from the environment at run time sees the caller's;
huggingface_hub reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, when imported, so
those two of its settings are set to the caller's for the command's duration.

:func:`run_python_file` does the same for a Python script (the docs' Python blocks).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import queue
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

CLIENT = Path(__file__).with_name("cli_client.py")
# Sub-commands that run in the test process; the others get a fresh interpreter.
IN_PROCESS = frozenset(
    {"predict", "info", "export", "evaluate", "explain", "deploy", "train", "batch-predict"}
)
# Arguments that set process-wide TensorFlow state (a distribution strategy's devices), or
# make Beam start worker processes of its own (batch-predict's multi_processing mode).
FRESH_ARGS = ("--strategy", "--devices", "--direct_running_mode")


def runs_in_process(argv: list[str], env: dict) -> bool:
    """Whether ``keras-vit ARGV`` may run in the test process (see the module docstring)."""
    if not argv or argv[0] not in IN_PROCESS or {"--help", "-h"} & set(argv):
        return False  # --help: argparse's exit and the terminal width are a fresh process's
    return "TF_CONFIG" not in env and not any(arg.startswith(FRESH_ARGS) for arg in argv)


@contextlib.contextmanager
def _hub_settings(env: dict) -> Iterator[None]:
    """huggingface_hub's cache folder and offline switch as ``env`` says, then as they were."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    saved = constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE
    constants.HF_HUB_CACHE = env.get("HF_HUB_CACHE", constants.HF_HUB_CACHE)
    constants.HF_HUB_OFFLINE = env.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    try:
        yield
    finally:
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = saved


class InProcessCli:
    """``with InProcessCli() as cli: cli.run(["bash", "-c", command], cwd=..., env=...)``."""

    def __init__(self, python: str = sys.executable):
        # A short path of its own: a socket's path has at most 107 bytes.
        self.folder, self.python = Path(tempfile.mkdtemp(prefix="keras-vit-cli-")), python
        self.socket_path = self.folder / "keras-vit.sock"
        self.wrapper = self.folder / "keras-vit"
        self.ran_in_process: list[list[str]] = []
        self.ran_fresh: list[list[str]] = []
        self._requests: queue.Queue = queue.Queue()
        self._listener: socket.socket | None = None

    def __enter__(self) -> InProcessCli:
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.socket_path))
        self._listener.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()
        # -I: the client needs only the standard library (and starts in milliseconds).
        python = shlex.quote(self.python)
        self.wrapper.write_text(f'#!/bin/sh\nexec {python} -I {shlex.quote(str(CLIENT))} "$@"\n')
        self.wrapper.chmod(0o755)
        return self

    def __exit__(self, *exc) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def environment(self, env: dict) -> dict:
        """``env`` with this runner's ``keras-vit`` first on the PATH."""
        return dict(
            env,
            PATH=f"{self.folder}{os.pathsep}{env.get('PATH', '')}",
            KERAS_VIT_CLI_SOCKET=str(self.socket_path),
        )

    def run(self, argv: list[str], *, cwd, env: dict, timeout: float):
        """``subprocess.run(argv, capture_output=True, text=True, timeout=...)``, serving the
        ``keras-vit`` calls meanwhile; returns its ``CompletedProcess``."""
        process = subprocess.Popen(
            argv, cwd=cwd, env=self.environment(env), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        output: dict[str, str] = {}
        readers = [
            threading.Thread(target=lambda n=n, s=s: output.__setitem__(n, s.read()), daemon=True)
            for n, s in (("stdout", process.stdout), ("stderr", process.stderr))
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(argv, timeout)
                try:
                    self._serve(*self._requests.get(timeout=0.05))
                except queue.Empty:
                    pass
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        for reader in readers:
            reader.join(timeout)
        return subprocess.CompletedProcess(
            argv, process.returncode, output.get("stdout", ""), output.get("stderr", "")
        )

    # --- the listening side ---

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
                size = int.from_bytes(message[:8], "big")
                body = message[8:]
                while len(body) < size:
                    chunk = connection.recv(1 << 16)
                    if not chunk:
                        break
                    body += chunk
                self._requests.put((connection, json.loads(body), fds))
            except (OSError, ValueError):
                connection.close()

    def _serve(self, connection: socket.socket, request: dict, fds: list[int]) -> None:
        argv = request["argv"]
        try:
            if len(fds) != 3 or not runs_in_process(argv, request["env"]):
                self.ran_fresh.append(argv)
                reply = {"fresh": [self.python, "-m", "keras_vit", *argv]}
            else:
                self.ran_in_process.append(argv)
                reply = {"status": _call(argv, request["cwd"], request["env"], fds)}
            connection.sendall(json.dumps(reply).encode() + b"\n")
        finally:
            for fd in fds:
                os.close(fd)
            connection.close()


def _call(argv: list[str], cwd: str, env: dict, fds: list[int]) -> int:
    """``keras_vit.cli.main(argv)`` with the caller's streams, directory and environment."""
    from keras_vit.cli import main

    with _as_caller(cwd, env, fds, ["keras-vit", *argv]):
        return _status_of(main, argv)


def run_python_file(
    path: str | os.PathLike, *, cwd, env: dict, init_globals: dict | None = None
) -> subprocess.CompletedProcess:
    """Runs the script ``path`` as ``__main__`` in this process, as ``python PATH`` would in
    ``cwd`` with ``env`` (standard streams captured at the descriptor level, so what
    TensorFlow's C++ side prints is caught too); returns a ``CompletedProcess``.

    What differs from a fresh interpreter: modules already imported stay imported (so a
    script that sets ``KERAS_BACKEND`` or TensorFlow's devices before importing them
    needs a fresh process), and Keras' global state is reset afterwards.
    """
    import runpy

    with contextlib.ExitStack() as files:
        stdin = files.enter_context(open(os.devnull, "rb"))  # noqa: SIM115
        out, err = (files.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2))
        fds = [stdin.fileno(), out.fileno(), err.fileno()]
        with _as_caller(str(cwd), env, fds, [str(path)]):
            status = _status_of(
                lambda: runpy.run_path(str(path), init_globals=init_globals, run_name="__main__")
            )
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess([str(path)], status, out.read(), err.read())


def _status_of(function, *args) -> int:
    """The exit status a fresh process would have after ``function(*args)``."""
    try:
        status = function(*args)
    except SystemExit as stop:  # argparse's errors, a command's sys.exit
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:  # what a fresh process would print before exiting 1
        traceback.print_exc()
        return 1
    return int(status) if isinstance(status, int) else 0


@contextlib.contextmanager
def _as_caller(cwd: str, env: dict, fds: list[int], argv: list[str]) -> Iterator[None]:
    """This process with ``fds`` as its standard streams, ``cwd``, ``env`` (huggingface_hub's
    settings included) and ``sys.argv``; all of it, and Keras' global state, put back
    afterwards."""
    import keras

    saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_policy, saved_argv = keras.config.dtype_policy(), sys.argv
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = argv
        with _hub_settings(env):
            yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv = saved_argv
        for target, fd in enumerate(saved_fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        keras.config.set_dtype_policy(saved_policy)
        keras.backend.clear_session()
        gc.collect()
