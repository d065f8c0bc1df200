"""Client start-up benchmark: ``keras-vit predict --server`` over gRPC and over REST.

Exports a tiny ViT, starts ``keras-vit serve`` on free loopback ports, and runs
``keras-vit predict --server ... a.jpg b.jpg c.jpg`` in a fresh process under
``/usr/bin/time -v``, round-robin over the protocols, several times each. Each
run is one whole command as a user types it: interpreter start, imports, the
request and the output. The peer in the same run is ``python -c pass`` (the
interpreter's own floor). Reports the median wall time and the median peak RSS,
and whether TensorFlow was imported, in ``benchmarks/results/client_startup.md``.

    python benchmarks/client_startup.py            # 7 rounds
    python benchmarks/client_startup.py --rounds 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine_info, markdown_table, write_results  # noqa: E402

# Prints whether the client loaded TensorFlow, after a real predict.
PROBE = (
    "import sys; from keras_vit.cli import main; code = main(sys.argv[1:]); "
    "print('TF_LOADED', 'tensorflow' in sys.modules, file=sys.stderr); sys.exit(code)"
)


def export_tiny(base: Path) -> None:
    from keras_vit import ViTClassifier
    from serving.export import export_saved_model

    labels = ["tabby cat", "tiger", "lynx", "astronaut", "rocket", "coffee mug", "espresso"]
    model = ViTClassifier(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=3,
        hidden_dim=48,
        mlp_dim=96,
        num_classes=len(labels),
        labels=labels,
    )
    export_saved_model(model, base, top_k=5)


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


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_available(rest_port: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{rest_port}/v1/models/vit"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                states = json.load(reply)["model_version_status"]
                if any(s["state"] == "AVAILABLE" for s in states):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not make the model available in time")


def timed(command: list[str], root: Path = ROOT) -> dict:
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--label", default="", help="a note for the results table (e.g. 'before')")
    parser.add_argument("--name", default="client_startup", help="results file name")
    parser.add_argument(
        "--compare-with",
        metavar="DIR",
        help="another checkout (e.g. `git archive OLD | tar -x -C DIR`) whose client runs as "
        "extra cases against the same server, in the same rounds",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_tiny(tmp / "vit")
        images = photos(tmp)
        grpc_port, rest_port = free_port(), free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keras_vit",
                "serve",
                "--model_name",
                "vit",
                f"--model_base_path={tmp / 'vit'}",
                f"--port={grpc_port}",
                f"--rest_api_port={rest_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            wait_available(rest_port)
            other = Path(args.compare_with).resolve() if args.compare_with else None
            cases = {
                "python -c pass (floor)": [sys.executable, "-c", "pass"],
                "predict --protocol grpc": [
                    sys.executable,
                    "-c",
                    PROBE,
                    "predict",
                    "--server",
                    f"127.0.0.1:{grpc_port}",
                    "--protocol",
                    "grpc",
                    *images,
                ],
                "predict --protocol rest": [
                    sys.executable,
                    "-c",
                    PROBE,
                    "predict",
                    "--server",
                    f"127.0.0.1:{rest_port}",
                    "--protocol",
                    "rest",
                    *images,
                ],
            }
            roots = dict.fromkeys(cases, ROOT)
            if other is not None:
                for name in [n for n in cases if n.startswith("predict")]:
                    cases[f"{name} ({other.name})"] = cases[name]
                    roots[f"{name} ({other.name})"] = other
            samples: dict[str, list[dict]] = {name: [] for name in cases}
            for round_ in range(args.rounds):
                names = list(cases)
                names = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in names:
                    sample = timed(cases[name], roots[name])
                    if sample["code"] != 0:
                        raise RuntimeError(f"{name} failed:\n{sample['stderr']}")
                    samples[name].append(sample)
        finally:
            server.terminate()
            server.wait(timeout=60)

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
            "command (3 JPEGs, tiny ViT)",
            "wall s, median [min-max]",
            "CPU s (user+sys), median [min-max]",
            "peak RSS MB, median [min-max]",
            "imports TensorFlow",
        ],
        rows,
    )
    sample_out = samples["predict --protocol grpc"][0]["stdout"].strip()
    body = (
        f"{args.label}\n\n{table}\n\n"
        "The machine is shared: wall times grow with its load (see the load average above); "
        "CPU time and RSS depend less on it, and the floor row shows the load's effect.\n\n"
        f"{args.rounds} rounds, round-robin with a rotating start; each run is a fresh process "
        "under `/usr/bin/time -v` (wall clock, user+system CPU time, maximum resident set "
        "size), against "
        "`keras-vit serve` on 127.0.0.1 serving a tiny ViT (32 px, 2 layers).\n\n"
        f"gRPC output of the last round:\n\n```\n{sample_out}\n```\n"
    )
    title = "Client start-up: keras-vit predict --server"
    print(write_results(args.name, title, machine_info(["grpcio", "protobuf"]), body))


if __name__ == "__main__":
    main()
