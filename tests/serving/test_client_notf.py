"""The REST, gRPC and Vertex clients work without importing TensorFlow, Keras or keras_vit (in a
fresh process): no TensorFlow, and none of keras_vit's import-time settings."""

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
    from tests.serving.client_support import FakeRestServer, solid

    from serving.client import RetryPolicy, ServingClient, UnavailableError, VertexClient

    with FakeRestServer() as server:
        with ServingClient(server.target, protocol="rest") as client:
            assert client.predict(solid((0, 0, 250)))[0].label == "blue"
            assert client.embed(solid((0, 0, 250))).shape == (1, 4)
            assert client.classify(solid((0, 0, 250)))[0][0][0] == "blue"
            assert client.status()[0].state == "AVAILABLE"
        with VertexClient("1", "p", "r", credentials=AnonymousCredentials(),
                          base_url=server.url) as vertex:
            assert vertex.predict(solid((250, 0, 0)))[0].label == "red"
    # gRPC: requests built and sent (nothing listens on port 1).
    with ServingClient("127.0.0.1:1", protocol="grpc", retry_policy=RetryPolicy(retries=0)) as c:
        try:
            c.predict(solid((0, 0, 250)))
        except UnavailableError:
            pass
        else:
            raise AssertionError("expected UNAVAILABLE")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras",
                    "tensorflow_serving", "tf_keras", "keras_vit"))
    print("LOADED", loaded)
    # Control: tensorflow-serving-api's protos load TensorFlow, so the check above can see it.
    import tensorflow_serving.apis.predict_pb2
    print("TF SERVING API LOADS TF", "tensorflow" in sys.modules)
    sys.exit(1 if loaded else 0)
    """
)


def test_clients_import_no_tensorflow():
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
    assert "TF SERVING API LOADS TF True" in result.stdout
