"""What ``make demo`` shows of the server command it starts."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from unittest import mock

from keras_vit import demo


def test_demo_shows_the_full_server_command_with_the_interpreter(tmp_path, capsys):
    with mock.patch.object(demo.subprocess, "Popen") as popen:
        demo.LocalServer(Path(tmp_path), "vit")
    shown = capsys.readouterr().out.strip()
    assert shown.startswith("$ ")
    started = popen.call_args.args[0]
    assert shlex.split(shown[2:]) == started
    assert started[:3] == [sys.executable, "-m", "serving.server"]
