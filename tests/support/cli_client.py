"""``keras-vit`` for shell scripts run by :mod:`tests.support.cli_runner` (stdlib only).

Hands its arguments, working directory, environment and standard streams (the file
descriptors themselves) to the test process listening on ``$KERAS_VIT_CLI_SOCKET``,
and exits with the status the command had there. When that process declines a command,
this one becomes ``python -m keras_vit ARGS`` (a fresh interpreter), as if never involved.
"""

import json
import os
import socket
import sys


def main() -> None:
    request = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}
    payload = json.dumps(request).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(os.environ["KERAS_VIT_CLI_SOCKET"])
        socket.send_fds(connection, [len(payload).to_bytes(8, "big") + payload], [0, 1, 2])
        reply = json.loads(connection.makefile("rb").readline() or b'{"status": 70}')
    if "fresh" in reply:
        os.execv(reply["fresh"][0], reply["fresh"])
    sys.exit(reply["status"])


if __name__ == "__main__":
    main()
