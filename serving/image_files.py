"""Reading image files: regular files only, the size checked first, the read capped.

Every command and library call that reads an image file by its path uses
:func:`read_image_file` (``predict`` with or without a server, ``evaluate``,
``explain``, ``batch-predict`` for local files, ``deploy vertex batch-input`` and
:class:`serving.client.ServingClient`). It

- refuses what is not a regular file, with a reason: a device (``/dev/zero`` would be
  read forever), a named pipe (``open`` would wait for a writer forever), a socket, a
  directory;
- refuses a file larger than the limit before reading a byte (a sparse file of a
  terabyte costs nothing to make);
- opens with ``O_NONBLOCK`` and checks the opened file again with ``fstat``: a pipe or
  device swapped in between the two checks is refused too, and never blocks;
- reads at most the limit plus one byte, whatever the file claims.

Symlinks: a path named explicitly is followed, like ``cat`` does: the user chose it.
When a folder is walked (:func:`leaves_folder`, used by the listings), a symlink whose
target lies outside that folder is skipped with its own error instead: a folder of
uploads or a shared directory must not turn into a way to read ``/etc/shadow``. Name
such a file itself to read it.

Messages never quote a file's content (see :mod:`serving.file_formats`).
"""

from __future__ import annotations

import glob
import os
import stat

DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
# The limit for the command line, where a flag is not at hand (predict, evaluate, explain).
MAX_IMAGE_BYTES_ENV = "KERAS_VIT_MAX_IMAGE_BYTES"
_CHUNK = 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
    (stat.S_ISFIFO, "is a named pipe (FIFO)"),
    (stat.S_ISSOCK, "is a socket"),
)


class ImageFileError(ValueError):
    """A file that was not read (or not whole): ``path`` and ``reason`` (no content)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def default_max_image_bytes() -> int:
    """``$KERAS_VIT_MAX_IMAGE_BYTES`` when set (a positive integer), else 64 MiB."""
    text = os.environ.get(MAX_IMAGE_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_IMAGE_BYTES_ENV}={text!r} must be a positive number of bytes")
    return value


def _limit_text(limit: int, setting: str) -> str:
    return f"the maximum image size of {limit:,} bytes ({setting})"


def _check_kind(name: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    for test, what in _KINDS:
        if test(mode):
            if what == "is a directory":
                raise ImageFileError(name, what)
            raise ImageFileError(name, f"{what}, not a regular file: not read")
    raise ImageFileError(name, "is not a regular file: not read")


def _os_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    return f"cannot read ({error.strerror or error})"


def read_image_file(
    path: str | os.PathLike,
    max_bytes: int | None = None,
    *,
    within: str | os.PathLike | None = None,
    setting: str | None = None,
) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    ``max_bytes`` defaults to :func:`default_max_image_bytes`; ``setting`` names how a
    user raises it, in the error (default: the environment variable). With ``within``
    (the folder a listing walked), a path whose real location is outside it is refused.

    Raises:
        ImageFileError: missing, not a regular file, too large, outside ``within``, or
            unreadable; the message names the file and the reason, never its content.
    """
    name = os.fspath(path)
    limit = default_max_image_bytes() if max_bytes is None else int(max_bytes)
    setting = setting or f"set {MAX_IMAGE_BYTES_ENV} to raise it"
    if within is not None and leaves_folder(name, within):
        raise ImageFileError(name, outside_reason(within))
    try:
        before = os.stat(name)
    except OSError as error:
        raise ImageFileError(name, _os_reason(error)) from None
    _check_kind(name, before.st_mode)
    if before.st_size > limit:
        raise ImageFileError(
            name, f"{before.st_size:,} bytes, over {_limit_text(limit, setting)}: not read"
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except OSError as error:
        raise ImageFileError(name, _os_reason(error)) from None
    with open(fd, "rb", buffering=0, closefd=True) as file:
        # What was opened may not be what was checked: check the open file itself.
        opened = os.fstat(fd)
        _check_kind(name, opened.st_mode)
        if opened.st_size > limit:
            raise ImageFileError(
                name, f"{opened.st_size:,} bytes, over {_limit_text(limit, setting)}: not read"
            )
        try:
            data = _read_capped(file, opened.st_size, limit)
        except OSError as error:
            raise ImageFileError(name, _os_reason(error)) from None
    if len(data) > limit:
        raise ImageFileError(
            name, f"more than {_limit_text(limit, setting)} (it grew while being read)"
        )
    if not data:
        raise ImageFileError(name, "is an empty file")
    return data


def _read_capped(file, size: int, limit: int) -> bytes:
    """At most ``limit + 1`` bytes: one read of the stated size, then chunks while more come
    (a file still being written, or one whose stated size is 0, as in ``/proc``)."""
    parts: list[bytes] = []
    total, want = 0, min(size, limit) + 1
    while total <= limit:
        more = file.read(want)
        if not more:
            break
        parts.append(more)
        total += len(more)
        want = min(_CHUNK, limit + 1 - total)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def listing_problem(
    path: str | os.PathLike, folder: str | os.PathLike, max_bytes: int | None = None
) -> str | None:
    """Why ``path``, found by walking ``folder``, would not be read (``None``: it would):
    a symlink leading outside the folder, not a regular file, or over the size limit.
    For listings that hand paths to another reader (``tf.io.read_file``)."""
    if leaves_folder(path, folder):
        return outside_reason(folder)
    limit = default_max_image_bytes() if max_bytes is None else int(max_bytes)
    name = os.fspath(path)
    try:
        info = os.stat(name)
        _check_kind(name, info.st_mode)
    except OSError as error:
        return _os_reason(error)
    except ImageFileError as error:
        return error.reason
    if info.st_size > limit:
        setting = f"set {MAX_IMAGE_BYTES_ENV} to raise it"
        return f"{info.st_size:,} bytes, over {_limit_text(limit, setting)}: not read"
    return None


def leaves_folder(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` (found by walking ``folder``) really lies outside ``folder``:
    a symlink, or a symlinked folder on the way, that leads elsewhere."""
    real = os.path.realpath(path)
    top = os.path.realpath(folder)
    try:
        return os.path.commonpath([real, top]) != top
    except ValueError:  # another drive (Windows)
        return True


def outside_reason(folder: str | os.PathLike) -> str:
    return (
        f"a symlink leading outside {os.fspath(folder)}: not read (symlinks found in a folder "
        "are followed only within it; name the file itself to read it)"
    )


def pattern_folder(pattern: str) -> str | None:
    """The folder a glob pattern walks: its leading components without wildcards
    (``photos/**/*.jpg`` -> ``photos``); ``None`` for a pattern without wildcards.

    >>> pattern_folder("photos/2024/**/*.jpg"), pattern_folder("cat.jpg")
    ('photos/2024', None)
    """

    if not glob.has_magic(pattern):
        return None
    fixed = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) or ("/" if pattern.startswith(os.sep) else ".")
