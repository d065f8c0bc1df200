"""Errors a user can act on: what to do with an export, a REST call to a gRPC port."""

from __future__ import annotations

import io
from concurrent import futures

import pytest

from keras_vit.cli import main


def _fake_export(base) -> None:
    (base / "1" / "variables").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"\x08\x01")


@pytest.mark.parametrize("command", ["predict", "explain", "evaluate", "info", "ui"])
@pytest.mark.parametrize("given", ["version folder", "base path"])
def test_an_export_given_as_model_says_to_serve_it_or_batch_predict_it(
    command, given, tmp_path, capsys
):
    base = tmp_path / "models" / "vit"
    _fake_export(base)
    source = str(base / "1" if given == "version folder" else base)
    extra = {
        "predict": ["cat.jpg"],
        "explain": ["--output", str(tmp_path / "maps"), "cat.jpg"],
        "evaluate": ["--data", str(tmp_path), "--output", str(tmp_path / "report")],
    }.get(command, [])
    assert main([command, "--model", source, *extra]) == 2
    err = capsys.readouterr().err
    assert f"error: {source} is an export" in err
    assert f"keras-vit serve --model_name=vit --model_base_path={base.resolve()}" in err
    assert f"keras-vit batch-predict --model-dir {source}" in err
    assert "--server localhost:8500" in err
    # Before: "it has neither model.keras ... nor config.json ... It contains: [...]".
    assert "It contains" not in err


def test_a_folder_that_is_no_export_is_left_to_the_loader(tmp_path):
    from keras_vit.cli.exports import export_problem

    (tmp_path / "2").mkdir()  # a digit folder without saved_model.pb
    assert export_problem(str(tmp_path), "predict") is None
    assert export_problem(str(tmp_path / "missing"), "predict") is None
    assert export_problem(None, "predict") is None


def test_rest_sent_to_a_grpc_port_says_the_port_speaks_grpc(tmp_path):
    import grpc
    from PIL import Image

    from serving.client.cli import cli_predict

    image = tmp_path / "cat.png"
    Image.new("RGB", (8, 8), "orange").save(image)
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        err = io.StringIO()
        code = cli_predict(f"127.0.0.1:{port}", [str(image)], protocol="rest", err=err)
    finally:
        server.stop(None)
    assert code == 1
    # Before: "cannot connect to ...: ('Connection aborted.', BadStatusLine('\x00\x00\x1e\x04...'))"
    assert "this port speaks gRPC (HTTP/2), not REST" in err.getvalue()
    assert "--protocol grpc" in err.getvalue() and "BadStatusLine" not in err.getvalue()
