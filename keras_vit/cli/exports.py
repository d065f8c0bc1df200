"""What the commands that take ``--model`` (a checkpoint) say when given an export instead."""

from __future__ import annotations

from pathlib import Path


def export_problem(source: str | None, command: str) -> str | None:
    """The error for a SavedModel export given as ``--model``, or None when it is not one.

    An export (``keras-vit export``: ``BASE/1/saved_model.pb``) is served or run in
    batch, not loaded as a checkpoint; the message says how, with the paths to type
    (``command`` is the one the user ran: with ``--server`` if it has one).
    Only looks at the folder: no TensorFlow, so the error comes at once.
    """
    if not source:
        return None
    path = Path(source)
    try:
        if _is_version(path):
            base, version = path.parent, path
        else:
            versions = sorted(
                (p for p in path.iterdir() if p.name.isdigit() and _is_version(p)),
                key=lambda p: int(p.name),
            )
            if not versions:
                return None
            base, version = path, versions[-1]
    except OSError:  # not a folder, or not readable: the loader says what is wrong
        return None
    kind = (
        f"an int8 export ({version.name}/keras_vit_int8/)"
        if not (version / "saved_model.pb").is_file()
        else f"an export (a TF Serving SavedModel, {version.name}/saved_model.pb)"
    )
    return (
        f"{source} is {kind}, "
        "not a checkpoint, which --model takes. To use the export:\n"
        f"  keras-vit serve --model_name=vit --model_base_path={base.resolve()}\n"
        f"  then {_with_server(command)}; or, over many images at once:\n"
        f"  keras-vit batch-predict --model-dir {source} --input IMAGES --output RESULTS"
    )


def _is_version(path: Path) -> bool:
    # A float export, or an int8 one (serving/int8_runtime.py: keras_vit_int8/saved_model.pb).
    return (path / "saved_model.pb").is_file() or (
        path / "keras_vit_int8" / "saved_model.pb"
    ).is_file()


def _with_server(command: str) -> str:
    if command in ("predict", "evaluate", "ui"):
        return f"keras-vit {command} --server localhost:8500 instead of --model"
    return "keras-vit predict (or evaluate, ui) --server localhost:8500"
