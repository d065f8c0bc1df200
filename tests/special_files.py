"""Files no image reader may open or read whole, for the tests of every command that reads
image files (``serving.image_files``)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

# What a password file looks like; no dead letter or message may show it.
SECRET = b"root:*:20228:0:99999:7:::\n"


def special_files(root: Path, first: str, second: str) -> dict[str, str]:
    """Files no reader may open or read whole, under ``root/first`` and ``root/second``:
    ``{relative path: what the error must say}``. A FIFO (reading blocks forever), a
    symlink to /dev/zero (endless), a socket, a symlink to a file outside ``root`` (holding
    :data:`SECRET`), and a sparse file of a terabyte."""
    secret = root.parent / "secret.txt"
    secret.write_bytes(SECRET)
    os.mkfifo(root / first / "pipe.jpg")
    os.symlink("/dev/zero", root / second / "zero.jpg")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / second / "socket.jpg"))  # the file stays after closing
    os.symlink(secret, root / first / "shadow.jpg")
    with open(root / second / "sparse.jpg", "wb") as sparse:
        sparse.truncate(1 << 40)
    return {
        f"{first}/pipe.jpg": "is a named pipe (FIFO), not a regular file",
        # Found in a folder, a link to a device is refused as leading outside it; a device
        # named itself is refused as one (tests/serving/test_client_file_inputs.py).
        f"{second}/zero.jpg": "a symlink leading outside",
        f"{second}/socket.jpg": "is a socket, not a regular file",
        f"{first}/shadow.jpg": "a symlink leading outside",
        f"{second}/sparse.jpg": "1,099,511,627,776 bytes, over the maximum image size",
    }
