"""What the command line makes of its arguments: image files, and the protocol of an address."""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from serving.image_files import leaves_folder, outside_reason

# Extensions picked up from a directory (named files are always sent, whatever their name).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
GRPC_PORT = 8500
REST_PORT = 8501


def expand_image_arguments(
    arguments: Sequence[str], recursive: bool = False
) -> tuple[list[str], list[tuple[str, str]]]:
    """``(image files, [(argument, problem), ...])`` for the command line's arguments.

    A file is kept as given (a symlink named here is followed). A directory gives its
    image files (by extension, sorted, hidden ones skipped), and those of its
    subdirectories with ``recursive`` (symlinked subdirectories are not entered). A
    symlink found in a directory whose target lies outside it is a problem of its own,
    not read (see :mod:`serving.image_files`). An argument that does not exist, or a
    directory without images, is a problem; the others still run.
    """
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    for argument in arguments:
        if os.path.isdir(argument):
            found, outside = _images_in(argument, recursive)
            problems.extend((path, outside_reason(argument)) for path in outside)
            if found:
                files.extend(found)
            elif not outside:
                where = "in it or its subdirectories" if recursive else "in it"
                hint = "" if recursive else " (--recursive also looks in subdirectories)"
                problems.append(
                    (argument, f"directory with no {_extensions()} files {where}{hint}")
                )
        elif os.path.exists(argument):
            files.append(argument)
        else:
            problems.append((argument, "no such file or directory"))
    return files, problems


def _images_in(directory: str, recursive: bool) -> tuple[list[str], list[str]]:
    """``(image files, symlinks among them that lead outside the directory)``."""
    found, outside = [], []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in sorted(names):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(root, name)
                if os.path.islink(path) and leaves_folder(path, directory):
                    outside.append(path)
                else:
                    found.append(path)
    return found, outside


def _extensions() -> str:
    return "/".join(ext[1:] for ext in IMAGE_EXTENSIONS)


def protocol_for_target(target: str) -> str:
    """``"rest"`` or ``"grpc"``, as the address says; ValueError when it does not say.

    ``http(s)://`` URLs and port 8501 are REST, ``grpc://`` and port 8500 gRPC (TF
    Serving's default ports).

    >>> protocol_for_target("localhost:8500"), protocol_for_target("https://vit.example.com")
    ('grpc', 'rest')
    """
    text = target.strip()
    if text.startswith(("http://", "https://")):
        return "rest"
    if text.startswith("grpc://"):
        return "grpc"
    try:
        port = urlsplit("//" + text).port
    except ValueError:
        port = None
    if port == REST_PORT:
        return "rest"
    if port == GRPC_PORT:
        return "grpc"
    raise ValueError(
        f"cannot tell the protocol from {target!r}: pass --protocol grpc or --protocol rest "
        f"(TF Serving's defaults: gRPC on port {GRPC_PORT}, REST on {REST_PORT}; "
        "an http(s):// URL means REST)"
    )
