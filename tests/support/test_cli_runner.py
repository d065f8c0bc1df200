"""Shell commands whose ``keras-vit`` runs in the test process behave as with a fresh one."""

from __future__ import annotations

import os
import sys

from tests.support.cli_runner import InProcessCli, runs_in_process


def _run(cli: InProcessCli, script: str, cwd) -> tuple[int, str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = cli.run(["bash", "-c", script], cwd=cwd, env=env, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_pipes_status_directory_and_environment_are_the_shells(tmp_path):
    (tmp_path / "sub").mkdir()
    with InProcessCli() as cli:
        status, out, err = _run(
            cli,
            "set -o pipefail; cd sub && keras-vit info --list-presets | head -3 > presets.txt"
            " && wc -l < presets.txt && keras-vit info --model /no/such/model; echo status=$?",
            tmp_path,
        )
        assert status == 0, err
        assert out.split() == ["3", "status=1"]  # the failing command's status, through bash
        assert "/no/such/model" in err
        assert (tmp_path / "sub" / "presets.txt").read_text().count("\n") == 3
        assert cli.ran_in_process == [
            ["info", "--list-presets"],
            ["info", "--model", "/no/such/model"],
        ]
        # argparse's error: exit status 2 and the usage on the command's own stderr.
        status, out, err = _run(cli, "keras-vit export --top-k 3", tmp_path)
        assert status == 2
        assert "the following arguments are required" in err
    assert os.getcwd() != str(tmp_path / "sub")


def test_declined_commands_run_in_a_fresh_interpreter(tmp_path):
    assert runs_in_process(["train", "--data", "x", "--output", "y"], {})
    assert not runs_in_process(["train", "--strategy", "mirrored"], {})
    assert not runs_in_process(["train", "--data", "x"], {"TF_CONFIG": "{}"})
    assert not runs_in_process(["serve", "--model_base_path=x"], {})
    assert not runs_in_process(["info", "--help"], {})
    with InProcessCli() as cli:
        status, out, err = _run(cli, "keras-vit info --help", tmp_path)
    assert status == 0, err
    assert out.startswith("usage: keras-vit info")
    assert cli.ran_fresh == [["info", "--help"]] and not cli.ran_in_process


def test_the_shells_stdin_is_left_to_the_next_command(tmp_path):
    """The in-process command gets the pipe as its stdin and leaves it open and unread."""
    with InProcessCli() as cli:
        status, out, _ = _run(
            cli, "printf 'hello\\n' | (keras-vit info --list-presets > /dev/null; cat)", tmp_path
        )
    assert status == 0
    assert out == "hello\n"
