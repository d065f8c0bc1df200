"""A server in a child process: started, waited for until ready, stopped (SIGTERM, then KILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


class ServerNotReady(RuntimeError):
    """The process exited, or did not become ready in time; the message holds its output."""


class ServerProcess:
    """``with ServerProcess(argv, ready=...) as server:`` runs ``argv`` until the block ends.

    ``ready`` is a line the process prints (stdout or stderr) once it serves, or a URL
    that must answer (with ``ready_text`` in its body, when given). The output is
    collected in ``server.output()`` (for failure messages). The child runs in its own
    session so that a wrapper script's children are stopped with it; ``stop()`` sends
    ``stop_signal`` (SIGTERM; a subclass may choose SIGINT, Ctrl-C) to that session.
    """

    stop_signal = signal.SIGTERM

    def __init__(
        self,
        argv: list[str],
        *,
        ready: str,
        ready_text: str | None = None,
        timeout: float = 120,
        cwd: Path | str | None = None,
        env: dict | None = None,
    ):
        self.argv, self.ready, self.ready_text = argv, ready, ready_text
        self.timeout, self.cwd, self.env = timeout, cwd, env
        self.process: subprocess.Popen | None = None
        self.started_in: float | None = None
        self._started = 0.0
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    def output(self) -> str:
        return "".join(self._lines)

    def _is_ready(self) -> bool:
        if not self.ready.startswith(("http://", "https://")):
            return any(self.ready in line for line in self._lines)
        try:
            with urllib.request.urlopen(self.ready, timeout=5) as reply:
                return self.ready_text is None or self.ready_text in reply.read().decode()
        except OSError:
            return False

    def launch(self) -> ServerProcess:
        """Starts the process without waiting; :meth:`wait_ready` waits (start several at once)."""
        self._started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, text=True, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._reader = threading.Thread(
            target=lambda: self._lines.extend(self.process.stdout), daemon=True
        )
        self._reader.start()
        return self

    def wait_ready(self) -> ServerProcess:
        """Until ready; stops the process and raises :class:`ServerNotReady` if it is not."""
        started = self._started
        deadline = started + self.timeout
        while not self._is_ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                what = "exited" if self.process.returncode is not None else "is not ready"
                raise ServerNotReady(
                    f"{' '.join(self.argv)} {what} after {time.monotonic() - started:.0f} s:\n"
                    f"{self.output()[-4000:]}"
                )
            time.sleep(0.1)
        self.started_in = time.monotonic() - started
        return self

    def start(self) -> ServerProcess:
        return self.launch().wait_ready()

    def stop(self, grace: float = 30) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, self.stop_signal)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._reader is not None:
            self._reader.join(10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "it") -> None:
    """Polls ``condition`` every 50 ms; raises ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
