"""Image files the client must not read whole: devices, pipes, sockets, huge sparse files,
symlinks leading out of a folder. Each ends quickly with its own error, in little memory,
and the good files still get their results (``serving.image_files``).

The command line runs in a subprocess whose peak RSS is measured: before the
fix, ``/dev/zero`` grew the process to 22 GB and a FIFO named ``x.jpg`` blocked forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.client import InputImageError, ServingClient
from serving.client.files import expand_image_arguments
from serving.image_files import ImageFileError, read_image_file
from tests.serving.client_support import FakeRestServer, encode, solid
from tests.special_files import SECRET, special_files

REPO = Path(__file__).resolve().parents[2]
MAX_RSS_BYTES = 200 * 1024 * 1024
# Every case is refused before or right after open; the CLI's own start-up (Python, numpy,
# requests) takes most of this. A hang is caught by the subprocess timeout.
MAX_SECONDS = 5.0
HANG_TIMEOUT = 60


@pytest.fixture(scope="module")
def server():
    with FakeRestServer() as running:
        yield running


@pytest.fixture
def photos(tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "red.jpg").write_bytes(encode(solid((230, 10, 10)), "JPEG"))
    (root / "b" / "blue.png").write_bytes(encode(solid((10, 10, 230))))
    # A symlink that stays inside the folder is followed.
    os.symlink(root / "b" / "blue.png", root / "a" / "blue-link.png")
    return root, special_files(root, "a", "b")


def run_measured(command: list[str], timeout: float = HANG_TIMEOUT):
    """``(return code, stdout, stderr, seconds, peak RSS bytes)`` of ``command``.

    The peak is the child's own ``VmHWM`` (``/proc/PID/status``), sampled until it exits:
    ``wait4``'s ``ru_maxrss`` would also count the pages of this test process that the
    child held between fork and exec (gigabytes once TensorFlow is loaded here).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests/serving")])}
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    output: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda: output.__setitem__("out", process.stdout.read())),
        threading.Thread(target=lambda: output.__setitem__("err", process.stderr.read())),
    ]
    for reader in readers:
        reader.start()
    peak = 0
    status_file = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        if time.monotonic() - started > timeout:
            process.kill()
            break
        try:
            for line in status_file.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)  # kB
        except (OSError, ValueError, IndexError):
            pass  # exiting
        time.sleep(0.01)
    process.wait()
    seconds = time.monotonic() - started
    for reader in readers:
        reader.join()
    return process.returncode, output["out"], output["err"], seconds, peak


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/PID/status")
def test_the_measurement_sees_a_child_that_grows():
    grow = "b = bytearray(300 << 20); import time; time.sleep(0.2)"
    code, _, _, _, rss = run_measured([sys.executable, "-c", grow])
    assert code == 0 and rss > 300 * 1024 * 1024


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/PID/status and /dev/zero")
def test_predict_cli_refuses_special_files_quickly_in_little_memory(server, photos):
    root, expected = photos
    named = ["/dev/zero", str(root / "a" / "pipe.jpg")]
    command = [sys.executable, "-m", "keras_vit", "predict", "--server", server.url]
    command += ["--protocol", "rest", "--recursive", str(root), *named]
    code, out, err, seconds, rss = run_measured(command)
    print(f"predict: {seconds:.2f} s, peak RSS {rss / 2**20:.0f} MiB")
    assert code == 1, err
    assert seconds < MAX_SECONDS, f"took {seconds:.1f} s"
    assert rss < MAX_RSS_BYTES, f"peak RSS {rss / 2**20:.0f} MiB"
    # The good files, the in-folder symlink included, still have their results.
    results = sorted(line.split("\t")[0] for line in out.splitlines())
    assert results == sorted(
        str(root / name) for name in ("a/red.jpg", "a/blue-link.png", "b/blue.png")
    )
    errors = err.splitlines()
    for name, reason in expected.items():
        lines = [e for e in errors if e.startswith(f"error: {root / name}: ")]
        assert lines and all(reason in line for line in lines), (name, lines)
    assert [e for e in errors if e.startswith("error: /dev/zero: ")] == [
        "error: /dev/zero: cannot read '/dev/zero': is a character device, not a regular "
        "file: not read"
    ]
    assert len([e for e in errors if "pipe.jpg" in e]) == 2  # found in the folder and named
    assert SECRET.decode()[:5] not in err
    assert len(server.requests) >= 1


def test_client_library_gives_each_bad_path_its_own_error(server, photos):
    root, _ = photos
    paths = [
        root / "a" / "red.jpg",
        "/dev/zero",
        root / "a" / "pipe.jpg",
        root / "b" / "socket.jpg",
        root / "b" / "sparse.jpg",
        root / "b" / "blue.png",
    ]
    started = time.monotonic()
    with ServingClient(server.url, protocol="rest") as client:
        outcomes = client.predict(paths, return_errors=True)
    assert time.monotonic() - started < MAX_SECONDS
    assert [o.label for o in (outcomes[0], outcomes[5])] == ["red", "blue"]
    reasons = [o.message for o in outcomes[1:5]]
    assert all(isinstance(o, InputImageError) for o in outcomes[1:5])
    assert "is a character device" in reasons[0]
    assert "is a named pipe (FIFO)" in reasons[1]
    assert "is a socket" in reasons[2]
    assert (
        "1,099,511,627,776 bytes, over the maximum image size of 67,108,864 bytes" in (reasons[3])
    )
    assert "max_image_bytes" in reasons[3]


def test_max_image_bytes_is_the_limit(server, photos, monkeypatch):
    root, _ = photos
    size = (root / "a" / "red.jpg").stat().st_size
    with ServingClient(server.url, protocol="rest", max_image_bytes=size - 1) as client:
        (outcome,) = client.predict([root / "a" / "red.jpg"], return_errors=True)
    assert isinstance(outcome, InputImageError)
    assert f"{size:,} bytes, over the maximum image size of {size - 1:,} bytes" in outcome.message
    monkeypatch.setenv("KERAS_VIT_MAX_IMAGE_BYTES", str(size - 1))
    with pytest.raises(ImageFileError, match="KERAS_VIT_MAX_IMAGE_BYTES"):
        read_image_file(root / "a" / "red.jpg")
    monkeypatch.setenv("KERAS_VIT_MAX_IMAGE_BYTES", str(size))
    assert len(read_image_file(root / "a" / "red.jpg")) == size


def test_symlinks_named_are_followed_those_found_leaving_a_folder_are_not(photos):
    root, _ = photos
    # Named explicitly: followed, as cat does (the user chose the file).
    assert read_image_file(root / "a" / "shadow.jpg") == SECRET
    # Found by walking the folder: reported, not listed for reading.
    files, problems = expand_image_arguments([str(root)], recursive=True)
    assert str(root / "a" / "shadow.jpg") not in files
    assert str(root / "a" / "blue-link.png") in files  # stays inside: followed
    outside = dict(problems)
    assert set(outside) == {str(root / "a" / "shadow.jpg"), str(root / "b" / "zero.jpg")}
    assert all("a symlink leading outside" in reason for reason in outside.values())
    with pytest.raises(ImageFileError, match="a symlink leading outside"):
        read_image_file(root / "a" / "shadow.jpg", within=root)


def test_a_fifo_swapped_in_after_the_check_does_not_block(tmp_path, monkeypatch):
    """The path is a regular file when stat'ed and a FIFO when opened."""
    path = tmp_path / "x.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    real_stat = os.stat
    swapped = []

    def stat_then_swap(name, *args, **kwargs):
        result = real_stat(name, *args, **kwargs)
        if os.fspath(name) == str(path) and not swapped:
            swapped.append(True)
            os.unlink(path)
            os.mkfifo(path)
        return result

    monkeypatch.setattr(os, "stat", stat_then_swap)
    started = time.monotonic()
    with pytest.raises(ImageFileError, match="is a named pipe"):
        read_image_file(path)
    assert swapped and time.monotonic() - started < 1.0


def test_a_file_growing_past_the_limit_while_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "growing.jpg"
    path.write_bytes(b"\xff\xd8\xff" + bytes(100))
    real_fstat = os.fstat

    def fstat_then_grow(fd):
        result = real_fstat(fd)
        with open(path, "ab") as more:
            more.write(bytes(1000))
        return result

    monkeypatch.setattr(os, "fstat", fstat_then_grow)
    with pytest.raises(ImageFileError, match="grew while being read"):
        read_image_file(path, max_bytes=500)


def test_docstring_examples_run():
    import doctest

    import serving.file_formats
    import serving.image_files

    for module in (serving.file_formats, serving.image_files):
        result = doctest.testmod(module)
        assert result.attempted and not result.failed, module.__name__


def test_an_older_exports_quote_is_replaced_by_the_format():
    from serving.client.image_errors import clean_message
    from serving.file_formats import unquote

    old = "image_bytes[0]: not a JPEG, PNG, GIF, BMP or WebP image: 26 bytes starting `root:*:2...`"
    assert unquote(old, SECRET).endswith(": 26 bytes (text)")
    assert clean_message(f"assertion failed: [{old}]").endswith(": 26 bytes (content not shown)")
