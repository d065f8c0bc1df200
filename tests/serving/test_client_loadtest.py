"""benchmarks.loadtest drives an endpoint within its bounds and reports what it measured."""

from __future__ import annotations

import json

import pytest

from tests.serving.client_support import FakeRestServer, encode, error_body, solid


@pytest.fixture(scope="module")
def loadtest():
    from benchmarks import loadtest

    return loadtest


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "red.jpg").write_bytes(encode(solid((200, 0, 0)), "JPEG"))
    (folder / "blue.png").write_bytes(encode(solid((0, 0, 200))))
    (folder / "notes.txt").write_text("not an image, skipped")
    return folder


def table_rows(text: str) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header


def test_rest_levels_are_bounded_and_reported(loadtest, image_dir, tmp_path):
    out, raw = tmp_path / "loadtest.md", tmp_path / "loadtest.json"
    with FakeRestServer() as server:
        code = loadtest.main(
            [
                "--protocol",
                "rest",
                "--target",
                server.target,
                "--images",
                str(image_dir),
                "--concurrency",
                "1,3",
                "--requests",
                "7",
                "--warmup",
                "1",
                "--batch-size",
                "2",
                "--output",
                str(out),
                "--json",
                str(raw),
            ]
        )
        sent = len(server.requests)
        bodies = [json.loads(r["body"]) for r in server.requests]
    assert code == 0
    assert sent == 2 * (7 + 1)  # requests + warm-up per level, nothing more
    assert all(len(b["instances"]) == 2 for b in bodies)
    rows = table_rows(out.read_text())
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "7", "0"), ("3", "7", "0")]
    assert rows[0][-1] == "1.00"  # first level is the reference
    numbers = json.loads(raw.read_text())
    assert [n["requests"] for n in numbers] == [7, 7]
    assert all(len(n["latencies_ms"]) == 7 for n in numbers)


def test_errors_are_counted_by_code(loadtest, image_dir, tmp_path):
    with FakeRestServer() as server:
        server.script = [(503, error_body("queue full"))] * 3
        loadtest.main(
            [
                "--protocol",
                "rest",
                "--target",
                server.target,
                "--images",
                str(image_dir),
                "--concurrency",
                "1",
                "--requests",
                "5",
                "--warmup",
                "0",
                "--output",
                str(tmp_path / "r.md"),
            ]
        )
    text = (tmp_path / "r.md").read_text()
    assert table_rows(text)[0][:3] == ["1", "2", "3"]
    assert "UNAVAILABLE: 3" in text


def test_vertex_endpoint(loadtest, image_dir, tmp_path):
    with FakeRestServer() as server:
        code = loadtest.main(
            [
                "--protocol",
                "vertex",
                "--endpoint",
                "42",
                "--project",
                "p",
                "--region",
                "r",
                "--base-url",
                server.url,
                "--anonymous-credentials",
                "--images",
                str(image_dir),
                "--concurrency",
                "2",
                "--requests",
                "4",
                "--warmup",
                "0",
                "--output",
                str(tmp_path / "v.md"),
            ]
        )
        paths = {r["path"] for r in server.requests}
    assert code == 0
    assert paths == {"/v1/projects/p/locations/r/endpoints/42:predict"}


def test_bad_arguments(loadtest):
    with pytest.raises(SystemExit):
        loadtest.main(["--concurrency", "0"])
    with pytest.raises(SystemExit):
        loadtest.main(["--protocol", "vertex"])
    with pytest.raises(SystemExit, match="no such image"):
        loadtest.main(["--images", "/nonexistent/dir"])
