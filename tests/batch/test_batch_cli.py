"""``keras-vit batch-predict``'s arguments: every mistake is one clear line, before any pipeline."""

from __future__ import annotations

import pytest

from keras_vit.cli import main
from tests.batch.conftest import NEEDS_BEAM

pytest.importorskip("apache_beam", reason=NEEDS_BEAM)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["batch-predict", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return status, captured.out, captured.err


def test_a_pattern_matching_nothing_is_a_clear_error(exported, tmp_path, capsys):
    status, _, err = run_cli(
        capsys,
        "--model-dir", str(exported),
        "--input", f"{tmp_path}/photos/**.jpg",
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert status == 1
    assert err.strip() == f"error: --input {tmp_path}/photos/**.jpg: matches no file " + (
        "(quote the pattern so that the shell leaves it to Beam)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "model_dir, message",
    [
        ("missing", "no such directory"),
        ("empty", "no saved_model.pb in it, nor a version directory"),
    ],
)
def test_a_bad_model_dir_is_a_clear_error(image_folder, tmp_path, capsys, model_dir, message):
    (tmp_path / "empty" / "7").mkdir(parents=True)  # a version directory without a model
    folder, _ = image_folder
    status, _, err = run_cli(
        capsys,
        "--model-dir", str(tmp_path / model_dir),
        "--input", f"{folder}/**",
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert status == 1
    assert err.startswith(f"error: --model-dir {tmp_path / model_dir}: {message}")
    assert len(err.strip().splitlines()) == 1


def test_a_saved_model_without_the_image_bytes_signature_is_refused(tmp_path, capsys):
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x + 1}, input_signature=[tf.TensorSpec([None])])
    tf.saved_model.save(
        module, str(tmp_path / "other" / "1"), signatures={"serving_default": module.f}
    )
    status, _, err = run_cli(
        capsys, "--model-dir", str(tmp_path / "other"), "--input", "x", "--output", "out"
    )
    assert status == 1
    assert "serving_default takes ['x'] and returns ['y']" in err
    assert "batch-predict needs a keras-vit export" in err


def test_a_mistyped_beam_option_is_refused_not_dropped(exported, tmp_path, capsys):
    status, _, err = run_cli(
        capsys,
        "--model-dir", str(exported),
        "--input", "x",
        "--output", str(tmp_path),
        "--direct_num_worker=2",
    )  # fmt: skip
    assert status == 2
    assert "unrecognised option(s): --direct_num_worker" in err


def test_unknown_options_still_fail_for_the_other_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["info", "--list-presets", "--direct_num_workers=2"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --direct_num_workers=2" in capsys.readouterr().err


def test_an_earlier_run_is_not_mixed_with_the_new_one(exported, image_folder, tmp_path, capsys):
    folder, _ = image_folder
    (tmp_path / "predictions-00000-of-00003.jsonl").write_text("{}\n")
    status, _, err = run_cli(
        capsys, "--model-dir", str(exported), "--input", f"{folder}/**", "--output", str(tmp_path)
    )
    assert status == 1
    assert "holds 1 file(s) of an earlier run" in err and "--overwrite" in err


def test_the_base_path_runs_its_highest_version(exported, capsys):
    from serving.batch.model_dir import resolve_model_dir

    assert resolve_model_dir(str(exported.parent)) == str(exported)
    assert resolve_model_dir(str(exported) + "/") == str(exported)
