"""Start-up benchmark of the commands that need no model in-process.

Exports a tiny ViT, starts ``keras-vit serve`` on free loopback ports, and runs
each command in a fresh process under ``/usr/bin/time -v``, round-robin, several
times each: ``--help``, ``info --list-presets``, an argument error, ``predict
--server`` over gRPC and REST (3 JPEGs), ``predict --server`` on a port that says
no protocol (the error), ``evaluate --server`` (6 images) and ``ui --server`` (until
the page is up; peak RSS from ``/proc``). Each run is one whole command as a user
types it: interpreter start, imports, the request and the output. The peer in the
same run is ``python -c pass`` (the interpreter's own floor). Reports the median
wall time, CPU time and peak RSS, and whether TensorFlow was imported.

    python -m benchmarks.client_startup                   # 7 rounds: results/cli-startup.md
    python -m benchmarks.client_startup --quick           # 2 rounds: cli-startup-quick.md
    python -m benchmarks.client_startup --rounds 3 --compare-with DIR
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    ServedModel,
    add_output_options,
    export_tiny,
    free_port,
    machine_info,
    markdown_table,
    results_path,
    write_results,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Prints whether the command loaded TensorFlow, after it ran (--help exits: SystemExit too).
PROBE = (
    "import sys; from keras_vit.cli import main\n"
    "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
    "print('TF_LOADED', 'tensorflow' in sys.modules, file=sys.stderr); sys.exit(code)"
)
GOAL = (
    "Goal (issue 19 §3): every command that needs no model in this process starts in ≤ 1 s and "
    "≤ 150 MB without importing TensorFlow. The old CLI imported TensorFlow in every command "
    "but REST `predict` and `deploy`, only to hide its start-up lines (keras_vit/cli/quiet.py);"
    " now keras_vit/quiet.py filters the import where one happens, so these commands never pay "
    "for it. `evaluate --server` still imports TensorFlow: its data sets are tf.data pipelines "
    "(keras_vit/training/data.py decodes every image to check it, and the evaluation loop reads"
    " files through tf.data), and it draws its figures with matplotlib; that is left for a "
    "change of the data pipeline. tests/cli/test_startup.py checks the imports of each path."
)
# Commands expected to fail (an argument error), and what their error must say.
EXPECTED_ERRORS = {
    "predict, port says no protocol": "pass --protocol",
    "argument error (predict --top-k many)": "invalid int value",
}


def photos(folder: Path) -> list[str]:
    from PIL import Image
    from skimage import data

    paths = []
    for name, pixels in (
        ("astronaut", data.astronaut()),
        ("cat", data.chelsea()),
        ("coffee", data.coffee()),
    ):
        path = folder / f"{name}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        path.write_bytes(buffer.getvalue())
        paths.append(str(path))
    return paths


# Settings this process (and the test suite) makes that a user's shell does not have: the
# commands run in a user's environment, where the old CLI imported TensorFlow to hide its lines.
NOT_A_USERS = ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "KERAS_VIT_TF_LOGS")


def users_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_A_USERS}
    return {**env, "PYTHONPATH": str(root)}


def timed(command: list[str], root: Path = ROOT) -> dict:
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command],
        capture_output=True,
        text=True,
        timeout=900,  # evaluate imports TensorFlow and draws its figures: minutes under load
        cwd=root,
        env=users_env(root),
    )
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    user = re.search(r"User time \(seconds\): ([\d.]+)", result.stderr)
    system = re.search(r"System time \(seconds\): ([\d.]+)", result.stderr)
    hours, minutes, seconds = wall.groups()
    return {
        "code": result.returncode,
        "wall": int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds),
        "rss_mb": int(rss.group(1)) / 1024,
        "cpu": float(user.group(1)) + float(system.group(1)),
        "tf": "TF_LOADED True" in result.stderr,
        "stdout": result.stdout,
        "stderr": result.stderr,
    }


def timed_ui(command: list[str], root: Path = ROOT) -> dict:
    """``keras-vit ui``: until it prints its page address; peak RSS from /proc (VmHWM)."""
    started = time.perf_counter()
    cpu_before = os.times()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env=users_env(root),
    )
    try:
        line = process.stdout.readline()
        wall = time.perf_counter() - started
        if not line.startswith("keras-vit ui: http"):
            raise RuntimeError(f"ui did not start: {line}{process.stderr.read()}")
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss_kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
        tf_loaded = "tensorflow" in Path(f"/proc/{process.pid}/maps").read_text()
    finally:
        process.terminate()
        process.wait(timeout=60)
    cpu_after = os.times()
    cpu = (cpu_after.children_user - cpu_before.children_user) + (
        cpu_after.children_system - cpu_before.children_system
    )
    return {"code": 0, "wall": wall, "rss_mb": rss_kb / 1024, "cpu": cpu, "tf": tf_loaded,
            "stdout": line, "stderr": ""}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="7 (--quick: 2)")
    parser.add_argument("--label", default="", help="a note for the results table (e.g. 'before')")
    add_output_options(parser, "cli-startup", quick="2 rounds", aliases=["--name"])
    parser.add_argument(
        "--compare-with",
        metavar="DIR",
        help="another checkout (e.g. `git archive OLD | tar -x -C DIR`) whose client runs as "
        "extra cases against the same server, in the same rounds",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 7)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_tiny(tmp / "vit", top_k=5)
        images = photos(tmp)
        with ServedModel(tmp / "vit") as server:
            grpc_port, rest_port = server.grpc_port, server.rest_port
            other = Path(args.compare_with).resolve() if args.compare_with else None
            data = tmp / "data"
            for index, path in enumerate(images):
                for label in ("cat", "coffee"):
                    (data / label).mkdir(parents=True, exist_ok=True)
                    (data / label / f"{index}.jpg").write_bytes(Path(path).read_bytes())
            cli = [sys.executable, "-c", PROBE]
            grpc, rest = f"127.0.0.1:{grpc_port}", f"127.0.0.1:{rest_port}"
            cases = {
                "python -c pass (floor)": [sys.executable, "-c", "pass"],
                "--help": [*cli, "--help"],
                "info --list-presets": [*cli, "info", "--list-presets"],
                "argument error (predict --top-k many)": [*cli, "predict", "--top-k", "many",
                                                          *images],
                "predict --server, --protocol grpc": [*cli, "predict", "--server", grpc,
                                                      "--protocol", "grpc", *images],
                "predict --server, --protocol rest": [*cli, "predict", "--server", rest,
                                                      "--protocol", "rest", *images],
                "predict, port says no protocol": [*cli, "predict", "--server",
                                                   f"127.0.0.1:{free_port()}", *images],
                "evaluate --server (gRPC, 6 images)": [*cli, "evaluate", "--server", grpc,
                                                       "--protocol", "grpc", "--data", str(data),
                                                       "--output", str(tmp / "report")],
                "ui --server (gRPC), until the page is up": [*cli, "ui", "--server", grpc,
                                                             "--protocol", "grpc", "--port", "0"],
            }  # fmt: skip
            roots = dict.fromkeys(cases, ROOT)
            if other is not None:
                for name in [n for n in cases if "floor" not in n]:
                    cases[f"{name} ({other.name})"] = cases[name]
                    roots[f"{name} ({other.name})"] = other
            samples: dict[str, list[dict]] = {name: [] for name in cases}
            for round_ in range(args.rounds):
                names = list(cases)
                names = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in names:
                    run = timed_ui if name.startswith("ui") else timed
                    sample = run(cases[name], roots[name])
                    base = name.removesuffix(f" ({other.name})") if other else name
                    expected = EXPECTED_ERRORS.get(base)
                    if expected is not None:
                        if expected not in sample["stderr"]:
                            raise RuntimeError(
                                f"{name} did not say {expected!r}:\n{sample['stderr']}"
                            )
                    elif sample["code"] != 0:
                        raise RuntimeError(f"{name} failed:\n{sample['stderr']}")
                    samples[name].append(sample)

    rows = []
    for name, runs in samples.items():
        walls = [s["wall"] for s in runs]
        rss = [s["rss_mb"] for s in runs]
        cpu = [s["cpu"] for s in runs]
        tf_loaded = "-" if "floor" in name else ("yes" if runs[0]["tf"] else "no")
        rows.append(
            [
                name,
                f"{statistics.median(walls):.2f} [{min(walls):.2f}-{max(walls):.2f}]",
                f"{statistics.median(cpu):.2f} [{min(cpu):.2f}-{max(cpu):.2f}]",
                f"{statistics.median(rss):.0f} [{min(rss):.0f}-{max(rss):.0f}]",
                tf_loaded,
            ]
        )
        print(name, rows[-1][1:], flush=True)
    table = markdown_table(
        [
            "command (tiny ViT)",
            "wall s, median [min-max]",
            "CPU s (user+sys), median [min-max]",
            "peak RSS MB, median [min-max]",
            "imports TensorFlow",
        ],
        rows,
    )
    sample_out = samples["predict --server, --protocol grpc"][0]["stdout"].strip()
    body = (
        f"{args.label}\n\n{table}\n\n{GOAL}\n\n"
        "The machine is shared: wall times grow with its load (see the load average above); "
        "CPU time and RSS depend less on it, and the floor row shows the load's effect.\n\n"
        f"{args.rounds} rounds, round-robin with a rotating start; each run is a fresh process "
        "under `/usr/bin/time -v` (wall clock, user+system CPU time, maximum resident set "
        "size), against "
        "the local server (`python -m serving.server`, what `keras-vit serve` runs) on "
        "127.0.0.1 serving a tiny ViT (32 px, 2 layers).\n\n"
        f"gRPC output of the last round:\n\n```\n{sample_out}\n```\n"
    )
    title = "Start-up of the keras-vit commands that need no model in-process"
    print(write_results(results_path(args), title, machine_info(["grpcio", "protobuf"]), body))


if __name__ == "__main__":
    main()
