"""The REST and Vertex clients work without importing TensorFlow (checked in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    from google.auth.credentials import AnonymousCredentials
    from client_support import FakeRestServer, solid

    from serving.client import ServingClient, VertexClient

    with FakeRestServer() as server:
        with ServingClient(server.target, protocol="rest") as client:
            assert client.predict(solid((0, 0, 250)))[0].label == "blue"
            assert client.embed(solid((0, 0, 250))).shape == (1, 4)
            assert client.classify(solid((0, 0, 250)))[0][0][0] == "blue"
            assert client.status()[0].state == "AVAILABLE"
        with VertexClient("1", "p", "r", credentials=AnonymousCredentials(),
                          base_url=server.url) as vertex:
            assert vertex.predict(solid((250, 0, 0)))[0].label == "red"
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras",
                    "tensorflow_serving", "tf_keras"))
    print("LOADED", loaded)
    # Control: the gRPC client does load TensorFlow, so the check above can see it.
    ServingClient("127.0.0.1:1", protocol="grpc").close()
    print("GRPC LOADS TF", "tensorflow" in sys.modules)
    sys.exit(1 if loaded else 0)
    """
)


def test_rest_and_vertex_clients_import_no_tensorflow():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout
    assert "GRPC LOADS TF True" in result.stdout
