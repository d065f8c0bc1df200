"""The other readers of image files go through ``serving.image_files`` too: in-process
``predict --model`` and ``explain`` (``keras_vit.images``), ``evaluate``/``train`` folders
(``keras_vit.training.data``) and ``deploy vertex batch-input`` (``serving.vertex_batch``).
Each special file gets its own reason, quickly, and no message quotes a file's content.
(The client and ``batch-predict``: tests/serving/test_client_file_inputs.py and
tests/batch/test_batch_pipeline.py.)"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

from tests.special_files import SECRET, special_files


def _png(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "data"
    for name, value in (("cats", 40), ("dogs", 200)):
        (root / name).mkdir(parents=True)
        (root / name / "good.png").write_bytes(_png(value))
    (root / "cats" / "notes.png").write_bytes(SECRET)
    return root, special_files(root, "cats", "dogs")


def test_read_image_names_each_special_file_and_never_quotes(folder):
    from keras_vit.images import ImageReadError, read_image

    root, _ = folder
    assert read_image(root / "cats" / "good.png", (16, 16)).shape == (16, 16, 3)
    cases = {
        "/dev/zero": "is a character device, not a regular file",
        root / "cats" / "pipe.jpg": "is a named pipe (FIFO)",
        root / "dogs" / "socket.jpg": "is a socket",
        root / "dogs" / "sparse.jpg": "over the maximum image size of 67,108,864 bytes",
        root / "cats" / "notes.png": "26 bytes (text)",
    }
    for path, reason in cases.items():
        started = time.monotonic()
        with pytest.raises(ImageReadError) as raised:
            read_image(path, (16, 16))
        assert time.monotonic() - started < 5.0
        assert reason in str(raised.value), str(raised.value)
        assert "root:" not in str(raised.value)


def test_an_image_folder_lists_special_files_as_unreadable(folder, caplog):
    from keras_vit.training.data import DataError, image_folder, list_image_folder

    root, expected = folder
    listed = list_image_folder(root)
    assert sorted(Path(p).relative_to(root).as_posix() for p in listed.paths) == [
        "cats/good.png",
        "cats/notes.png",
        "dogs/good.png",
    ]
    unreadable = {Path(p).relative_to(root).as_posix(): r for p, r in listed.unreadable}
    assert set(unreadable) == set(expected)
    for name, reason in expected.items():
        assert reason in unreadable[name], (name, unreadable[name])
    # Skipped with one warning (and the text file as not decodable), or an error.
    with caplog.at_level("WARNING"):
        dataset = image_folder(root)
    assert dataset.size == 2
    assert "Skipping 5 files that cannot be read" in caplog.text
    with pytest.raises(DataError, match="5 files in .* cannot be read"):
        image_folder(root, on_corrupt="error")


def test_vertex_batch_input_refuses_special_files(folder, tmp_path):
    from serving.vertex_batch import InstanceError, expand_images, write_instances

    root, _ = folder
    with pytest.raises(InstanceError) as raised:
        expand_images([str(root)])
    message = str(raised.value)
    assert message.count("a symlink leading outside") == 2  # shadow.jpg and zero.jpg
    named = [
        root / "cats" / "good.png",
        root / "cats" / "pipe.jpg",
        root / "dogs" / "socket.jpg",
        root / "dogs" / "sparse.jpg",
        root / "cats" / "notes.png",
    ]
    with pytest.raises(InstanceError) as raised:
        write_instances([str(p) for p in named], tmp_path / "instances.jsonl")
    message = str(raised.value)
    assert message.startswith("4 of 5 images cannot be batch prediction instances")
    assert "is a named pipe (FIFO)" in message and "is a socket" in message
    assert "1,099,511,627,776 bytes, over the maximum image size" in message
    assert "not a JPEG/PNG/GIF/BMP/WEBP image (text)" in message
    assert "root:" not in message
    assert not (tmp_path / "instances.jsonl").exists()
