"""The README's and the guides' promises hold: every shell and Python block runs.

Each fenced ``bash``/``sh``/``python`` block of ``README.md`` and ``docs/*.md``
runs as written, in document order, in one working directory per document
(``cd``, variables and files carry over from block to block, as for a reader).
What a test machine lacks is stood in for, never skipped silently:

- hub ids (``google/vit-base-patch16-224``) resolve, offline, to a tiny
  checkpoint written by transformers, through a Hugging Face cache
  (``tests/readme_fixtures.py``); ``photos/``, ``cat.jpg`` & co. are real
  scikit-image photos; other names go through ``SUBSTITUTIONS``;
- the ports 8500/8501 become free ports; a server command (``keras-vit serve``,
  ``python -m serving.server``) is started in the background and waited for;
  a block that talks to a server nobody started gets one (``_needs_server``);
- training is shrunk to one epoch; ``--dry-run`` stays where it is;
- ``keras-vit predict|info|export|evaluate|explain|deploy|train|batch-predict`` run
  inside the test process (``tests/support/cli_runner.py``: bash runs the command as
  written and its ``keras-vit`` hands argv, streams, directory and environment to this
  process), saving a TensorFlow import per command; so do the Python blocks
  (``run_python_file``) and the server commands (``keras-vit serve FLAGS``, ``python -m
  serving.server FLAGS``: the same flag parsing and server). ``--verbose``, ``--help``,
  ``train --strategy``, Beam's multi_processing mode and other ``python`` commands still
  start a fresh interpreter, whose start-up lines are checked (``tests/cli/test_quiet.py``
  checks the quiet start-up of the CLI and the Python API; the journeys run
  every command in fresh processes).

Each command (shell) or block (Python) must exit 0, print no Python traceback
and no TensorFlow C++ start-up lines (``_tf_startup_lines``). What cannot run
here is in ``SKIPS``, each with its reason. ``test_help_examples`` does the
same for the examples of every ``keras-vit COMMAND --help``.

To extend: add a row to ``SUBSTITUTIONS`` (a regex and its replacement), to
``SKIPS`` (a regex on a command or block, ``scope="block"`` to skip the
whole block) or to ``SETUP`` (files a document expects to exist).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cache import cached_output
from tests.support.cli_runner import InProcessCli, run_python_file
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]
SHELL, PYTHON = ("bash", "sh", "shell", "console"), ("python", "py", "python3")
COMMAND_TIMEOUT = 300  # seconds per command or Python block
SERVER_START_TIMEOUT = 120

# Lines TensorFlow's C++ runtime prints at start-up (glog format, absl's notice).
TF_STARTUP = re.compile(r"^[IWE]\d{4} |absl::InitializeLog|rebuild TensorFlow with", re.M)


@dataclass(frozen=True)
class Skip:
    """A command (or, with ``scope="block"``, a whole block) that cannot run here."""

    pattern: str  # re.search on the command or the block text
    reason: str
    scope: str = "command"


SKIPS = [
    Skip(
        r"^make (demo|test)\b",
        "sets up .venv and runs the demo or the whole suite; "
        "tests/test_demo.py runs the demo's job, CI runs `make test`",
    ),  # fmt: skip
    Skip(r"^make (image|image-gpu)\b|^docker ", "needs Docker (not on the build machines)"),
    Skip(r"^make (k8s-validate|checkov)\b", "runs tests/deploy (part of the suite CI runs)"),
    Skip(
        r"kustomize edit",
        "edits the overlay for a pushed image, then needs a Kubernetes cluster",
        scope="block",
    ),  # fmt: skip
    Skip(r"^kubectl ", "needs a Kubernetes cluster"),
    Skip(r"--strategy multi_worker", "needs several workers (a multi-worker cluster)"),
    Skip(r"TPUClusterResolver", "needs a TPU", scope="block"),
    Skip(r"^tensorflow_model_server\b", "needs TF Serving's binary (the Docker image)"),
    Skip(r"tfds:", "needs the network (TensorFlow Datasets downloads the data set)"),
    Skip(
        r"--data hf:[A-Za-z][\w-]*(/[\w.-]+)?(\s|$)",
        "needs the network (a Hugging Face Hub data set)",
    ),
    Skip(r"^keras-vit ui\b", "serves a page until Ctrl-C; tests/ui drives it in Chromium"),
    Skip(r"^hf download\b", "needs the network (the Hugging Face Hub)"),
    Skip(r"--protocol vertex", "needs a Google Cloud project (a Vertex AI endpoint)"),
    Skip(r"VertexClient\(", "needs a Google Cloud project (a Vertex AI endpoint)", scope="block"),
    Skip(
        r"^keras-vit deploy vertex\b(?! batch-input\b)(?!.*--dry-run)",  # batch-input: local
        "needs a Google Cloud project (only --dry-run runs offline)",
    ),  # fmt: skip
    Skip(r"(^|/)(\.venv/bin/)?python -m pytest\b", "runs the test suite itself (CI runs it)"),
    Skip(
        r"^(\.venv/bin/)?python -m benchmarks\.(?!loadtest\b)",
        "a benchmark: minutes of ViT-B/16 (`make bench`)",
    ),  # fmt: skip
    Skip(
        r"^keras-vit batch-predict\b.*--runner (DataflowRunner|FlinkRunner|SparkRunner)\b",
        "needs a Google Cloud project or a Flink/Spark cluster; tests/batch runs the same "
        "pipeline on the local runner",
    ),  # fmt: skip
]
if importlib.util.find_spec("apache_beam") is None:
    SKIPS += [
        Skip(r"^keras-vit batch-predict\b", "needs the batch extra (apache-beam)"),
        Skip(r"out/predictions-", "reads batch-predict's output (the batch extra)", "block"),
    ]


# Commands the docs show failing on purpose: (regex, exit status, why).
EXPECTED_STATUS = [
    (r"\bnotes\.txt missing\.png\b", 1, "shows how failed inputs are reported: exit 1"),
]


def expected_status(command: str) -> int:
    for pattern, status, _ in EXPECTED_STATUS:
        if re.search(pattern, command):
            return status
    return 0


def _serve_on_test_ports(line: str) -> str:
    """Server commands (also in a comment) listen on the test's gRPC port, not on 8500."""
    if re.search(r"^(# )?(keras-vit serve|python -m serving\.server)\b", line.strip()) and (
        "--port" not in line
    ):
        return re.sub(r"(serving\.server|keras-vit serve)", r"\1 --port={grpc_port}", line, count=1)
    return line


# (regex, replacement) applied to every command and Python block, in order; the
# replacement may name {grpc_port}, {rest_port}, {workdir} and {fixtures}.
SUBSTITUTIONS = [
    # On the test's free ports the protocol no longer follows from 8500/8501: say it.
    (
        r"^(keras-vit (?:predict|evaluate|ui)\b(?!.*--protocol).*?--server \S*:8500\b)",
        r"\1 --protocol grpc",
    ),
    (
        r"^(keras-vit (?:predict|evaluate|ui)\b(?!.*--protocol).*?--server \S*:8501\b)",
        r"\1 --protocol rest",
    ),
    (r"\b8500\b", "{grpc_port}"),
    (r"\b8501\b", "{rest_port}"),
    (r"/abs/path/models/", "{workdir}/models/"),
    (r"/tmp/models/", "{workdir}/tmp-models/"),
    (r"/data/vit-base-patch16-224", "{fixtures}/hf-tiny"),
    (r"\bViT-B_16\.npz\b|\bvit_base\.npz\b", "{fixtures}/tiny.npz"),
    # The evaluation and explain examples: a labelled folder and a label of the tiny run.
    (r"^(keras-vit evaluate\b.*?)\bdata/digits/test\b", r"\1pets"),
    (r"^(keras-vit evaluate\b.*?)\bphotos_test/", r"\1photos/"),  # held-out photos: the same
    (r"--label tabby\b", "--label cat"),
    # Training shrinks to one epoch (argparse keeps the last --epochs).
    (r"^((?:\S+=\S+ )*keras-vit train\b[^#]*?)(\s*#.*)?$", r"\1 --epochs 1\2"),
    (r"\bepochs=\d+", "epochs=1"),
    # ViT-B/16 with random weights is 330 MB to build and save: the same call on ViT-Ti/16.
    # This changes what the block shows (its "86,567,656 params" are B/16's), so
    # test_readme_shown_outputs checks that count on B/16 itself.
    (r'from_preset\("B/16", load_weights=False\)', 'from_preset("Ti/16", load_weights=False)'),
    # A README comment that tells the reader to start the server, done for them.
    (r"^# ((?:keras-vit serve|python -m serving\.server)\b.*)$", r"_docs_start_server('\1')"),
    # An HTTP error status fails the command (curl exits 0 on a 404 otherwise).
    (r"^curl ", "curl --fail-with-body "),
    # Load tests: a few requests per level.
    (
        r"^(python -m benchmarks\.loadtest\b[^#]*?)(\s*#.*)?$",
        r"\1 --requests 8 --duration 3 --output {workdir}/loadtest.md\2",
    ),
]

# Files a document's working directory gets before its first block, besides the
# photos (cat.jpg, dog.jpg, dog.png, photos/, flowers/), vit-b16/ and runs/beans/.
SETUP = {
    "docs/checkpoints.md": {"runs/flowers": "run"},
    "docs/client.md": {"models/vit": "export/vit"},
    "docs/batch.md": {"models/vit": "export/vit"},
    "docs/server.md": {"models/vit": "export/vit"},
    "docs/evaluate.md": {"runs/digits": "run", "runs/photos": "run"},
    "--help": {"runs/photos": "run", "models/vit": "export/vit"},
}

# Run before each Python block: the names the docs use for their inputs. (The block also
# gets ``_docs_start_server(command)``: DocumentRun.start_server.)
PYTHON_PRELUDE = """\
import os, subprocess, time, urllib.request
import numpy as np
from PIL import Image
photo_a = np.asarray(Image.open("cat.jpg").convert("RGB"))
photo_b = np.asarray(Image.open("dog.jpg").convert("RGB").resize(photo_a.shape[1::-1]))
images = np.stack([photo_a, photo_b])
"""

# A server command run in the test process: the program, then flags only (no shell
# operators; ``$PWD`` and quotes are expanded by bash, as for the command itself).
IN_PROCESS_SERVER = re.compile(
    r"^(?:keras-vit serve|python -m serving\.server)(?P<flags>(?:\s[^|;&<>()`\n]*)?)$"
)


@dataclass
class Block:
    file: str
    heading: str
    index: int  # 1-based, among the file's blocks
    line: int
    language: str
    text: str

    @property
    def name(self) -> str:
        return f"{self.file}:{self.line} [{self.heading}] block {self.index} ({self.language})"


def extract_blocks(text: str, file: str) -> list[Block]:
    """Every fenced code block with its language, line and the heading above it."""
    blocks, heading, fence, start, language, body = [], "(top)", None, 0, "", []
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None:
            opening = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)", line)
            if opening:
                fence, start, language, body = opening.group(1), number, opening.group(2), []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            body_text = textwrap.dedent("\n".join(body))  # blocks inside list items are indented
            blocks.append(Block(file, heading, len(blocks) + 1, start, language, body_text))
            fence = None
        else:
            body.append(line)
    return blocks


def shell_commands(text: str) -> list[str]:
    """Commands of a shell block: continuation lines and open quotes joined, comments dropped."""
    commands, current = [], ""
    for line in text.splitlines():
        if current:
            current += ("\n" if _open_quote(current) else " ") + line.strip()
        elif line.strip() and not line.lstrip().startswith("#"):
            current = line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        if current and not _open_quote(current):
            commands.append(current)
            current = ""
    return commands


def _open_quote(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # "No closing quotation": the command goes on on the next line
        return True
    return False


def find_skip(text: str, scope: str) -> Skip | None:
    for skip in SKIPS:
        if skip.scope == scope and re.search(skip.pattern, text, re.M):
            return skip
    return None


def _is_server(command: str) -> bool:
    return bool(re.search(r"^(keras-vit serve|python -m serving\.server)\b", command))


def _tf_startup_lines(output: str) -> list[str]:
    """The TensorFlow C++ start-up lines in ``output`` (what the docs promise not to print)."""
    return [m.group(0) for m in re.finditer(r"^.*(?:" + TF_STARTUP.pattern + r").*$", output, re.M)]


# Commands that are not keras-vit's: their TensorFlow start-up lines are TensorFlow's.
NOT_OURS = [
    (r"^saved_model_cli\b", "TensorFlow's own tool"),
    (r"^keras-vit --tf-logs\b", "asks for TensorFlow's start-up lines on purpose"),
    (r"from tests\.", "a test-suite helper for developers (builds TF Serving's test model)"),
    (r"^import grpc, tensorflow as tf", "TensorFlow's own stubs, as TF Serving documents them"),
]


def _not_ours(where: str) -> bool:
    return any(re.search(pattern, where.split("$ ", 1)[-1]) for pattern, _ in NOT_OURS)


def check_output(output: str, where: str, record: list[str]) -> None:
    assert "Traceback (most recent call last)" not in output, (
        f"{where} printed a traceback:\n" + (output[-4000:])
    )
    noise = [] if _not_ours(where) else _tf_startup_lines(output)
    if noise:
        record.append(f"{where}: {len(noise)} TensorFlow start-up line(s), e.g. {noise[0]!r}")
        raise AssertionError(f"{where} printed TensorFlow start-up lines:\n" + "\n".join(noise))


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> Path:
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("the stand-in checkpoint is written by transformers (requirements-dev.txt)")
    out = cached_output(
        "readme", ROOT / "tests" / "readme_fixtures.py", [],
        tmp_path_factory.mktemp("readme_fixtures"),
        key_files=[ROOT / "keras_vit" / "imagenet.py",
                   ROOT / "keras_vit" / "data" / "imagenet-1k-id2label.json"],
        env=dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES=""), timeout=600,
    )  # fmt: skip
    from tests.readme_fixtures import write_keras_files

    write_keras_files(out)  # with this checkout's keras_vit: never cached
    return out


class DocumentRun:
    """One document's blocks, in order, in one working directory with its own servers."""

    def __init__(self, name: str, workdir: Path, fixtures: Path, cli: InProcessCli | None = None):
        self.name, self.workdir, self.fixtures = name, workdir, fixtures
        self.cli = cli  # runs the commands' keras-vit in this process (fresh where it declines)
        self.values = dict(
            grpc_port=free_port(), rest_port=free_port(), workdir=workdir, fixtures=fixtures
        )
        self.servers: list = []  # subprocess.Popen, or a Server in this process
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.noise: list[str] = []
        self.bin = workdir / ".bin"
        self._prepare()

    def _prepare(self) -> None:
        images = self.fixtures / "images"
        for name in ("cat.jpg", "dog.jpg", "dog.png"):
            shutil.copy(images / name, self.workdir / name)
        # The command-line example's inputs: a photo, a text file and a folder of photos.
        shutil.copy(images / "cat.jpg", self.workdir / "good.jpg")
        (self.workdir / "notes.txt").write_text("meeting notes, not an image\n")
        (self.workdir / "dir").mkdir()
        shutil.copy(images / "dog.png", self.workdir / "dir" / "cat.png")
        # Image folders, one sub-folder per class: crops of a real photo per class.
        from PIL import Image

        for folder, classes in (
            ("photos", ("cat", "coffee")),
            ("flowers", ("dog", "rocket")),
            ("pets", ("cat", "dog")),
        ):
            for label in classes:
                (self.workdir / folder / label).mkdir(parents=True)
                photo = Image.open(images / f"{label}.jpg")
                width, height = photo.size
                for k in range(6):
                    box = (k * width // 12, k * height // 12, width - k * width // 24, height)
                    suffix = "png" if k % 2 else "jpg"
                    photo.crop(box).save(self.workdir / folder / label / f"{label}{k}.{suffix}")
        setup = {"vit-b16": "hf-tiny", "runs/beans": "run", **SETUP.get(self.name, {})}
        for target, source in setup.items():
            shutil.copytree(self.fixtures / source, self.workdir / target)
        # `python` and `keras-vit` are this checkout's, whatever the PATH says.
        self.bin.mkdir()
        # The docs run from a checkout: its scripts are where they say.
        for name in ("benchmarks", "tests"):
            (self.workdir / name).symlink_to(ROOT / name)
        # (Wrappers, not symlinks: a symlinked venv python outside the venv loses its packages.)
        python = shlex.quote(sys.executable)
        for name, line in (
            ("python", f'exec {python} "$@"'),
            ("python3", f'exec {python} "$@"'),
            ("keras-vit", f'exec {python} -m keras_vit "$@"'),
        ):
            (self.bin / name).write_text(f"#!/bin/sh\n{line}\n")
            (self.bin / name).chmod(0o755)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a user sees, not the test suite's quiet
        env.update(
            PATH=f"{self.bin}:{Path(sys.executable).parent}:{env.get('PATH', '')}",
            PYTHONPATH=str(ROOT),
            HF_HUB_CACHE=str(self.fixtures / "hf-cache"),
            HF_HUB_OFFLINE="1",  # the cache stands in for the hub, even where it is reachable
            CUDA_VISIBLE_DEVICES="",
            PYTHONUNBUFFERED="1",
        )
        return env

    def substitute(self, text: str) -> str:
        text = "\n".join(_serve_on_test_ports(line) for line in text.splitlines())
        for pattern, replacement in SUBSTITUTIONS:
            text = re.sub(pattern, replacement, text, flags=re.M)
        for key, value in self.values.items():
            text = text.replace("{" + key + "}", str(value))
        return text

    # --- servers ---

    def start_server(self, command: str, where: str) -> None:
        """Starts ``command`` (all the servers listen on the test's two ports) and waits
        until its model is AVAILABLE. ``keras-vit serve FLAGS`` and ``python -m
        serving.server FLAGS`` run in this process, with the same flag parsing and
        server; a command with shell operators gets a process of its own."""
        self.stop_servers()
        command = command.rstrip("&").strip()
        match = re.search(r"--model_name[= ](\S+)", command)
        model = match.group(1) if match else "default"
        url = f"http://127.0.0.1:{self.values['rest_port']}/v1/models/{model}"
        in_process = IN_PROCESS_SERVER.match(command)
        if in_process:
            from serving.server.status import ServingError
            from tests.support.servers import start_from_flags

            try:  # returns once the models are loaded and both ports listen
                self.servers.append(start_from_flags(self.expand(in_process["flags"])))
            except (ServingError, SystemExit) as error:
                pytest.fail(f"{where}: the server did not start:\n$ {command}\n{error}")
            with urllib.request.urlopen(url, timeout=5) as reply:
                assert b"AVAILABLE" in reply.read(), f"{where}: {model} is not AVAILABLE"
            return
        log = open(self.workdir / f".server-{len(self.ran)}.log", "w+")  # noqa: SIM115
        process = subprocess.Popen(
            ["bash", "-c", "exec " + command], cwd=self.workdir, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.servers.append(process)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    if b"AVAILABLE" in reply.read():
                        return
            except OSError:
                pass
            log.seek(0)
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{where}: the server did not come up:\n$ {command}\n{log.read()}")
            time.sleep(0.5)

    def expand(self, words: str) -> list[str]:
        """``words`` as bash splits and expands them in the document's directory."""
        done = subprocess.run(
            ["bash", "-c", "printf '%s\\0' " + words], cwd=self.workdir, env=self.env,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.split("\0")[:-1]

    def stop_servers(self) -> None:
        while self.servers:
            server = self.servers.pop()
            if not isinstance(server, subprocess.Popen):
                server.shutdown()
            elif server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()

    def _needs_server(self, original: str) -> None:
        """A block that talks to localhost:8500/8501 gets a server if nobody started one."""
        if self.servers or not re.search(r"localhost:850[01]", original):
            return
        if not (self.workdir / "models" / "vit").exists():
            shutil.copytree(self.fixtures / "export" / "vit", self.workdir / "models" / "vit")
        self.start_server(
            f"python -m serving.server --model_name=vit --model_base_path={self.workdir}/models/vit"
            f" --port={self.values['grpc_port']} --rest_api_port={self.values['rest_port']}",
            "(server for the blocks that query one)",
        )

    # --- blocks ---

    def shell(self, command: str, where: str, carry: list[str] = ()) -> None:
        script = "\n".join([*carry, "set -o pipefail", command])
        started = time.monotonic()
        if self.cli is not None:
            done = self.cli.run(
                ["bash", "-c", script], cwd=self.workdir, env=self.env, timeout=COMMAND_TIMEOUT
            )
        else:
            done = subprocess.run(
                ["bash", "-c", script], cwd=self.workdir, env=self.env,
                capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
            )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == expected_status(command), (
            f"{where}: exit status {done.returncode}\n$ {command}\n{output[-6000:]}"
        )
        check_output(output, f"{where}: $ {command}", self.noise)
        self.ran.append(f"{where}: $ {command} ({time.monotonic() - started:.0f} s)")

    def run_shell_block(self, block: Block) -> None:
        carry: list[str] = []  # cd and variable assignments persist within the block
        for original in shell_commands(block.text):
            skip = find_skip(original, "command")
            if skip:
                self.skipped.append(f"{block.name}: $ {original} -- {skip.reason}")
                continue
            command = self.substitute(original)
            if _is_server(command):
                self.start_server(command, block.name)
                self.ran.append(f"{block.name}: $ {command} (in the background)")
                continue
            self._needs_server(original)
            self.shell(command, block.name, carry)
            if re.match(r"^(export )?[A-Za-z_]\w*=\S*$|^(export )?[A-Za-z_]\w*=\$\(.*\)$|^cd ",
                        command):  # fmt: skip
                carry.append(command)

    def run_python_block(self, block: Block) -> None:
        """The block, after :data:`PYTHON_PRELUDE`, as ``python BLOCK.py`` in this process
        (``cli_runner.run_python_file``: its streams, directory and environment are the
        document's; no TensorFlow import per block)."""
        source = self.substitute(block.text)
        if "_docs_start_server(" in source:
            self.stop_servers()  # the block starts its own on the test's ports
        else:
            self._needs_server(block.text)
        path = self.workdir / f".block-{block.index}.py"
        path.write_text(PYTHON_PRELUDE + "\n# --- the block ---\n" + source + "\n")
        started = time.monotonic()
        done = run_python_file(
            path, cwd=self.workdir, env=self.env,
            init_globals={"_docs_start_server": lambda c: self.start_server(c, block.name)},
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, (
            f"{block.name}: exit status {done.returncode}\n{textwrap.indent(source, '    ')}\n"
            f"{output[-6000:]}"
        )
        check_output(output, f"{block.name}: $ {block.text.strip()}", self.noise)
        self.ran.append(f"{block.name} ({time.monotonic() - started:.0f} s)")

    def run(self, blocks: list[Block]) -> None:
        try:
            for block in blocks:
                language = block.language.lower()
                if language not in SHELL + PYTHON:
                    continue  # output samples, config files
                skip = find_skip(block.text, "block")
                if skip:
                    self.skipped.append(f"{block.name} -- {skip.reason}")
                elif language in SHELL:
                    self.run_shell_block(block)
                else:
                    self.run_python_block(block)
        finally:
            self.stop_servers()
            print(self.report())

    def report(self) -> str:
        lines = [f"{self.name}: {len(self.ran)} run, {len(self.skipped)} skipped"]
        if self.cli is not None:
            lines[0] += (
                f"; keras-vit: {len(self.cli.ran_in_process)} in the test process, "
                f"{len(self.cli.ran_fresh)} in a fresh one"
            )
        lines += [f"  ran     {item}" for item in self.ran]
        lines += [f"  skipped {item}" for item in self.skipped]
        lines += [f"  noise   {item}" for item in self.noise]
        return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS)
def test_document_blocks_run(document, fixtures, tmp_path):
    blocks = extract_blocks((ROOT / document).read_text(), document)
    runnable = [b for b in blocks if b.language.lower() in SHELL + PYTHON]
    if not runnable:
        pytest.skip(f"{document} has no shell or Python block")
    with InProcessCli() as cli:
        DocumentRun(document, tmp_path, fixtures, cli).run(runnable)


def help_examples() -> list[tuple[str, list[str]]]:
    """The example commands in every ``keras-vit COMMAND [TARGET] --help``."""
    from keras_vit.cli import build_parser

    out = []
    parser = build_parser()
    pending = [("keras-vit", parser)]
    while pending:
        prog, current = pending.pop(0)
        for action in current._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                pending += [(f"{prog} {name}", sub) for name, sub in action.choices.items()]
        text = current.format_help()
        examples = text.split("example", 1)[1] if "example" in text else ""
        commands = [c for c in shell_commands(examples) if re.match(r"(keras-vit|python) ", c)]
        if commands:
            out.append((prog, commands))
    return out


@pytest.mark.slow
def test_help_examples(fixtures, tmp_path):
    examples = help_examples()
    assert examples, "no --help text has examples"
    with InProcessCli() as cli:
        run_help_examples(examples, DocumentRun("--help", tmp_path, fixtures, cli))


def run_help_examples(examples, run: DocumentRun) -> None:
    try:
        for prog, commands in examples:
            block = Block("--help", prog, 1, 0, "bash", "\n".join(commands))
            run.run_shell_block(block)
    finally:
        run.stop_servers()
        print(run.report())


def test_extraction_finds_blocks_headings_and_continuations():
    text = textwrap.dedent(
        """\
        # Title
        ```bash
        keras-vit export --model a \\
            --output b   # comment
        # a comment line
        ```
        ## Python part
        ~~~python
        print("```")
        ~~~
        ```
        output sample
        ```
        """
    )
    blocks = extract_blocks(text, "x.md")
    assert [(b.heading, b.language, b.line) for b in blocks] == [
        ("Title", "bash", 2), ("Python part", "python", 8), ("Python part", "", 11)
    ]  # fmt: skip
    assert shell_commands(blocks[0].text) == ["keras-vit export --model a --output b   # comment"]
    assert blocks[1].text == 'print("```")'
    assert shell_commands("A='{\"x\":\n  1}' \\\n  cmd --y\nnext") == [
        "A='{\"x\":\n1}' cmd --y",
        "next",
    ]
    assert find_skip("kubectl apply -k x", "command").reason == "needs a Kubernetes cluster"
    assert find_skip("keras-vit deploy vertex --project p --dry-run", "command") is None


# Outputs the README's Python blocks show in their comments (``# 'Egyptian cat'``, a
# parameter count): each pattern is checked by its function, or says why it cannot be.
def _b16_parameter_count(shown: str) -> None:
    from keras_vit import ViTClassifier

    count = ViTClassifier.from_preset("B/16", load_weights=False).count_params()
    assert count == int(shown.replace(",", "")), f"README shows {shown}, B/16 has {count:,}"


SHOWN_OUTPUTS = {
    r"random weights, ([\d,]+) params": _b16_parameter_count,
    r"# '(Egyptian cat)'": (
        "the real google/vit-base-patch16-224 weights' top-1 for the cat photo: offline the "
        "hub id is a tiny random checkpoint (readme_fixtures.py), so the block runs and prints "
        "another label; tests/convert/test_golden_vit_b16.py asserts 'Egyptian cat' on a cat "
        "photo with the real weights where KERAS_VIT_GOLDEN_DIR provides them"
    ),
}
SHOWN = re.compile(r"#\s*'[^']+'|[\d,]{5,} params")  # what counts as a shown output


def test_readme_shown_outputs():
    """Every output a README Python block shows is compared, or its reason is stated."""
    lines = [
        line
        for block in extract_blocks((ROOT / "README.md").read_text(), "README.md")
        if block.language in PYTHON
        for line in block.text.splitlines()
        if SHOWN.search(line)
    ]
    assert len(lines) >= 2
    for line in lines:
        matches = [(p, c) for p, c in SHOWN_OUTPUTS.items() if re.search(p, line)]
        assert matches, f"the README shows an output nobody checks: {line!r}"
        for pattern, check in matches:
            if callable(check):
                check(re.search(pattern, line).group(1))
            else:
                print(f"not compared here: {line.strip()!r}: {check}")
