"""``keras-vit predict --server``: every image gets a result or a named failure.

Against the fake TF Serving REST server of ``client_support`` (no TensorFlow).
"""

from __future__ import annotations

import json

import pytest

from serving.client import cli_predict
from serving.client.files import expand_image_arguments, protocol_for_target
from serving.client.image_errors import blamed_image, clean_message
from tests.serving.client_support import FakeRestServer, encode, solid

# What keras-vit's exported decoder says, through TF, for a text file (captured from
# `keras-vit serve`: one element of a batch of two).
TF_TEXT_FILE_ERROR = (
    "assertion failed: [image_bytes[1]: base64 text that decodes to 10 bytes that are not a "
    "JPEG, PNG, GIF, BMP or WebP image]\n\t [[{{function_node decode_images_while_cond_1_false"
    "_2457}}{{node decode_images/while/cond_1/bad_image/Assert}}]]"
)


@pytest.fixture(scope="module")
def server():
    with FakeRestServer() as running:
        yield running


@pytest.fixture
def files(tmp_path, monkeypatch):
    """good.jpg, notes.txt, dir/{blue.png, readme.txt, sub/green.gif}; cwd is tmp_path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.jpg").write_bytes(encode(solid((230, 10, 10)), "JPEG"))
    (tmp_path / "notes.txt").write_text("hello notes file\n")
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "blue.png").write_bytes(encode(solid((10, 10, 230))))
    (folder / "readme.txt").write_text("not picked from a directory")
    (folder / "sub" / "green.gif").write_bytes(encode(solid((10, 230, 10)), "GIF"))
    return tmp_path


def test_good_results_printed_failures_named(server, files, capsys):
    code = cli_predict(server.url, ["good.jpg", "notes.txt", "missing.png", "dir/"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        ["good.jpg", "red"],
        ["dir/blue.png", "blue"],
    ]
    errors = err.splitlines()
    assert "error: missing.png: no such file or directory" in errors
    (notes,) = [line for line in errors if line.startswith("error: notes.txt: ")]
    assert "[[" not in notes and "function_node" not in notes
    assert len(errors) == 2
    # One request of three images, then the bad one is left out: the good ones are resent.
    assert [len(json.loads(r["body"])["instances"]) for r in server.requests[-2:]] == [3, 2]


def test_recursive_takes_subdirectories(server, files, capsys):
    assert cli_predict(server.url, ["dir"], recursive=True, output_json=True) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["image"], r["label"]) for r in records] == [
        ("dir/blue.png", "blue"),
        ("dir/sub/green.gif", "green"),
    ]


def test_directory_without_images_is_reported(server, files, capsys):
    (files / "empty").mkdir()
    assert cli_predict(server.url, ["empty", "good.jpg"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("good.jpg\tred\t")
    assert "error: empty: directory with no jpg/jpeg/png/gif/bmp/webp files in it" in err


def test_a_failed_request_names_its_files_once(files, capsys):
    code = cli_predict("http://127.0.0.1:1", ["good.jpg", "dir"], timeout=5)
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: good.jpg, dir/blue.png: rest request to http://127.0.0.1:1 ")
    assert "UNAVAILABLE" in line


@pytest.mark.parametrize(
    ("target", "protocol"),
    [
        ("localhost:8500", "grpc"),
        ("10.0.0.7:8501", "rest"),
        ("[::1]:8500", "grpc"),
        ("http://localhost:9000", "rest"),
        ("https://vit.example.com", "rest"),
        ("grpc://host:9000", "grpc"),
    ],
)
def test_protocol_from_the_address(target, protocol):
    assert protocol_for_target(target) == protocol


@pytest.mark.parametrize("target", ["localhost:9000", "localhost", "host:notaport"])
def test_unknown_address_asks_for_the_flag(target, files, capsys):
    with pytest.raises(ValueError, match="--protocol grpc or --protocol rest"):
        protocol_for_target(target)
    assert cli_predict(target, ["good.jpg"]) == 2
    assert "pass --protocol grpc or --protocol rest" in capsys.readouterr().err


def test_expand_keeps_named_files_and_orders_directories(files):
    found, problems = expand_image_arguments(["notes.txt", "dir", "nope"])
    assert found == ["notes.txt", "dir/blue.png"]
    assert problems == [("nope", "no such file or directory")]


def test_tf_graph_text_is_removed_and_worded_for_raw_bytes():
    message = clean_message(TF_TEXT_FILE_ERROR)
    assert message.startswith("image_bytes[1]: base64 text")
    assert "[[" not in message and "assertion failed" not in message
    position, reason = blamed_image(message, 2)
    # The client sent the file's raw bytes: to the user, it is simply not an image.
    assert (position, reason) == (
        1,
        "not a JPEG, PNG, GIF, BMP or WebP image, nor base64 text of one",
    )
    assert blamed_image(message, 1) is None  # position out of range: nobody is blamed
    rest = "Failed to process element: 3 key: image_bytes of 'instances' list. Error: bad b64"
    assert blamed_image(rest, 4) == (3, "bad b64")


def test_many_failed_requests_make_one_line(files, capsys):
    names = [f"copy{i}.jpg" for i in range(7)]
    for name in names:
        (files / name).write_bytes((files / "good.jpg").read_bytes())
    assert cli_predict("http://127.0.0.1:1", names, batch_size=2, timeout=5) == 1
    (line,) = capsys.readouterr().err.splitlines()  # four requests failed alike
    assert line.startswith(
        "error: copy0.jpg, copy1.jpg, copy2.jpg, copy3.jpg, copy4.jpg and 2 more"
    )


def test_eager_tensorflow_errors_lose_their_stack_too():
    # What TF 2.21 raises for a failed tf.debugging.Assert inside a tf.function.
    eager = (
        "Graph execution error:\n\nDetected at node Assert/Assert defined at (most recent call "
        'last):\n  File "<string>", line 8, in <module>\n\n  File "<string>", line 5, in f\n\n'
        "assertion failed: [image_bytes[0]: empty string: no image bytes]\n\t "
        "[[{{node Assert/Assert}}]] [Op:__inference_f_10]"
    )
    assert clean_message(eager) == "image_bytes[0]: empty string: no image bytes"
    assert clean_message("Servable not found for request: Latest(x)") == (
        "Servable not found for request: Latest(x)"
    )


def test_docstring_examples_run():
    import doctest

    import serving.client.files
    import serving.client.image_errors
    import serving.protos

    for module in (serving.client.files, serving.client.image_errors, serving.protos):
        result = doctest.testmod(module)
        assert result.attempted and not result.failed, module.__name__
