"""Ctrl-C and SIGTERM during ``keras-vit train``: stop, and say what was saved and how to resume.

:func:`stop_on_signals` turns SIGINT and SIGTERM into :class:`Stopped` (a
``KeyboardInterrupt``, so that code which cleans up on Ctrl-C does so for
SIGTERM too); :func:`stopped_message` is the one line the command prints.
The backup itself is written atomically (:mod:`keras_vit.training.backup`),
so a signal at any point leaves a backup that the next run can use.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from keras_vit.training import backup as backup_lib


class Stopped(KeyboardInterrupt):
    """Raised by the handlers of :func:`stop_on_signals`; ``signum`` is the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's status for a process ended by the signal


@contextlib.contextmanager
def stop_on_signals(signums=(signal.SIGINT, signal.SIGTERM)):
    """Within the block, each of ``signums`` raises :class:`Stopped` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def stopped_message(stop: KeyboardInterrupt, backup_dir: str, epochs: int | None) -> str:
    """One line: which signal stopped training, what the backup holds, how to go on."""
    name = stop.name if isinstance(stop, Stopped) else "SIGINT"
    total = f" of {epochs}" if epochs else ""
    done = backup_lib.saved_epochs(backup_dir)
    if not done:
        return (
            f"Stopped by {name} before the first epoch was backed up: nothing was saved; "
            "the same command starts over."
        )
    if epochs and done >= epochs:
        return (
            f"Stopped by {name} after the last epoch: all {done} epochs are saved in "
            f"{backup_dir}; run the same command again to write the model directory "
            "without training again."
        )
    return (
        f"Stopped by {name}: epochs 1-{done}{total} are saved in {backup_dir}; run "
        f"the same command again to resume at epoch {done + 1}, or add --no-resume "
        "to start over."
    )
