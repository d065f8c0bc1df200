"""benchmarks/ is a package run as ``python -m benchmarks.NAME``: its harness's output options,
and no module there shadows a package of the project or edits the import path."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted((ROOT / "benchmarks").glob("*.py"))


def parse(argv: list[str], quick: str | None = "tiny", aliases=("--output",)):
    parser = argparse.ArgumentParser()
    harness.add_output_options(parser, "thing", quick=quick, aliases=aliases)
    return parser.parse_args(argv)


def test_results_go_to_the_name_the_quick_name_or_out() -> None:
    assert harness.results_path(parse([])) == harness.RESULTS_DIR / "thing.md"
    assert harness.results_path(parse(["--quick"])) == harness.RESULTS_DIR / "thing-quick.md"
    assert harness.results_path(parse(["--out", "other"])) == harness.RESULTS_DIR / "other.md"
    assert harness.results_path(parse(["--output", "/tmp/x/r.md", "--quick"])) == Path(
        "/tmp/x/r.md"
    )
    assert harness.results_path(parse(["--out", "r.md"])) == Path("r.md")
    with pytest.raises(SystemExit):  # no quick mode: no --quick
        parse(["--quick"], quick=None)


def test_write_results_has_the_machine_header(tmp_path) -> None:
    info = harness.machine_info(["pytest"])
    assert {"cpu model", "cpu flags", "cpus (nproc)", "pytest"} <= set(info)
    path = harness.write_results(tmp_path / "deep" / "r.md", "Title", info, "| a |\n")
    text = path.read_text()
    assert text.startswith("# Title\n\n- date: ") and "- cpu flags: " in text
    assert text.endswith("| a |\n")


def test_no_benchmark_shadows_a_package_or_edits_the_import_path() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert {"serving", "keras_vit", "benchmarks", "tests"} <= packages
    assert not {m.stem for m in MODULES} & packages
    for module in MODULES:
        tree = ast.parse(module.read_text(), str(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path":
                value = node.value
                assert not (isinstance(value, ast.Name) and value.id == "sys"), module.name
