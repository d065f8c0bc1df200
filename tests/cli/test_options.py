"""One vocabulary of flags across every ``keras-vit`` command (docs/cli-options.md)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from keras_vit.cli import build_parser
from keras_vit.cli.options_table import TF_SERVING_SPELLINGS, all_options, markdown

ROOT = Path(__file__).resolve().parents[2]


def _checked():
    """Visible named options, less serve's TF Serving spellings (allow-listed on purpose)."""
    return [
        o
        for o in all_options()
        if o.names and not o.hidden and o.command.split(" ")[0] not in TF_SERVING_SPELLINGS
    ]


def test_docs_table_is_generated_from_the_parsers():
    written = (ROOT / "docs" / "cli-options.md").read_text()
    assert written == markdown(), (
        "docs/cli-options.md is out of date: python -m keras_vit.cli.options_table "
        "> docs/cli-options.md"
    )


def test_one_visible_name_has_one_meaning_across_commands():
    meanings: dict[str, set[str]] = defaultdict(set)
    for option in _checked():
        for name in option.names:
            meanings[name].add(option.dest)
    clashes = {name: dests for name, dests in meanings.items() if len(dests) > 1}
    assert not clashes, f"one name, several meanings (dest): {clashes}"


def _negates(names: set[tuple[str, ...]]) -> bool:
    """``--progress`` / ``--no-progress``: one switch, two spellings by design."""
    flat = {n for spelling in names for n in spelling}
    return len(names) == 2 and any(f"--no-{n[2:]}" in flat for n in flat)


def test_one_meaning_has_one_visible_name_across_commands():
    names: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for option in _checked():
        names[option.dest].add(option.names)
    clashes = {d: n for d, n in names.items() if len(n) > 1 and not _negates(n)}
    assert not clashes, f"one meaning (dest), several visible names: {clashes}"


def test_every_old_spelling_is_hidden_and_means_a_visible_option():
    options = all_options()
    visible = {(o.command, o.dest) for o in options if not o.hidden}
    hidden = [o for o in options if o.hidden]
    assert hidden, "the old spellings are listed"
    for option in hidden:
        assert (option.command, option.dest) in visible, option


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["--verbose", "info", "--list-presets"], ["--tf-logs", "info", "--list-presets"]),
        (
            ["deploy", "vertex", "--min-replicas", "2", "--max-replicas", "3", "--label", "a=b"],
            ["deploy", "vertex", "--min-replica-count", "2", "--max-replica-count", "3",
             "--labels", "a=b"],
        ),
        (
            ["deploy", "vertex", "train", "--project", "p", "--region", "r", "--bucket", "gs://b",
             "--data", "gs://d", "--output", "gs://o", "--image", "i", "--timeout", "90"],
            ["deploy", "vertex", "train", "--project", "p", "--region", "r", "--bucket", "gs://b",
             "--data", "gs://d", "--output", "gs://o", "--container-image-uri", "i",
             "--job-timeout", "90"],
        ),
    ],
)  # fmt: skip
def test_old_spellings_still_work(old, new):
    parser = build_parser()
    assert vars(parser.parse_args(old)) == vars(parser.parse_args(new))


def test_registry_model_parses_where_the_old_model_was_ambiguous():
    argv = ["deploy", "vertex", "batch-predict", "--project", "p", "--region", "r"]
    argv += ["--instances", "x", "--output", "gs://o"]
    assert build_parser().parse_args([*argv, "--registry-model", "123"]).registry_model == "123"


def test_train_verbose_alone_is_keras_verbose_1_and_takes_a_level():
    parser = build_parser()
    base = ["train", "--data", "photos/", "--output", "runs/photos"]
    assert parser.parse_args([*base, "--verbose"]).verbose == 1
    assert parser.parse_args([*base, "--verbose", "2"]).verbose == 2
    assert parser.parse_args(base).verbose is None
    assert parser.parse_args(["--tf-logs", *base]).tf_logs is True
