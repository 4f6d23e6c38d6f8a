"""Every spec in specs/ validates and dry-runs offline (built-in teacher configs); the paper's
setups say what the paper did."""

from __future__ import annotations

from pathlib import Path

import pytest

from search import teachers
from search.run import main
from search.space import candidates
from search.spec import load_spec, teacher_config

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "specs").glob("*.yaml"))
PAPER = {"maltese.yaml": "mt", "slovak.yaml": "sk", "swahili.yaml": "sw", "maltese-mbert.yaml": "mt"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    teachers._hub_config.cache_clear()


def test_the_papers_specs_are_there():
    assert set(PAPER) <= {path.name for path in SPECS}


@pytest.mark.parametrize("path", SPECS, ids=[path.name for path in SPECS])
def test_spec_validates_and_dry_runs(path, capsys):
    spec = load_spec(path)
    assert candidates(spec, teacher_config(spec))
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    table, builds = out.split("\n\n")
    assert table.splitlines()[-1].split()[1] == "candidates," and builds.startswith("stage builds for ")


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_setups(name):
    spec = load_spec(REPO / "specs" / name)
    assert spec.language == PAPER[name]
    assert set(spec.data.tasks) == {"sentiment", "topic", "ner", "pos"}
    sources = [spec.data.corpus.source, spec.data.heldout.source] + [t.source for t in spec.data.tasks.values()]
    local = {name: source for name, source in spec.data.tasks.items() if not source.source.startswith("hf:")}
    assert all(source.startswith("hf:") for source in sources if source not in {s.source for s in local.values()})
    assert set(local) <= ({"pos"} if name == "swahili.yaml" else set())  # MasakhaPOS: a script repo, local files
    # no script-based repos (datasets 4+ refuse them): UD is read from its parquet export
    assert not any(bare in sources for bare in ("hf:universal_dependencies:mt_mudt", "hf:masakhane/masakhapos:swa"))
    if name != "swahili.yaml":
        assert spec.data.tasks["pos"].revision == "refs/convert/parquet" and spec.data.tasks["pos"].data_dir
    # SIB-200 is FLORES text: FLORES is in no corpus, and the held-out head is skipped by the corpus
    assert "flores" not in spec.data.corpus.source + spec.data.heldout.source
    assert spec.data.corpus.skip_lines == spec.data.heldout.max_lines and spec.data.heldout.skip_lines == 0
    assert spec.teacher.adapt.enabled
    assert spec.search.resources.gpu > 0
    config = teacher_config(spec)
    found = {(c.num_hidden_layers, c.intermediate_size, c.hidden_size, c.vocab_size) for c in candidates(spec, config)}
    assert {(6, 2048, hidden, 40_000) for hidden in (564, 456, 312)} <= found  # the paper's path
    assert len(found) > 3  # and wider choices around it
    if "mbert" in name:
        assert spec.teacher.model == "google-bert/bert-base-multilingual-cased"
        assert spec.space.init == ("last_k",) and spec.trim_vocab.counting == "document"
    else:
        assert spec.teacher.model == "FacebookAI/xlm-roberta-base"
        assert spec.space.init == ("stride",) and spec.trim_vocab.counting == "frequency"


def test_maltese_dry_run_shows_the_papers_smallest_student(capsys):
    assert main([str(REPO / "specs" / "maltese.yaml"), "--dry-run"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.split("\n\n")[0].splitlines()[2:-1]]
    (row,) = [r for r in rows if r[1:5] == ["6", "2048", "312", "40000"]]
    assert row[5:7] == ["22,812,688", "91.8%"]


def test_readme_test_command_is_what_ci_runs():
    command = 'python3.11 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/python -m pytest -m "not cluster"'
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert command in readme and command in ci.splitlines()
    assert "python3.11 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m search.run specs/demo.yaml" in readme


def test_dry_runs_import_no_heavy_package():
    """Every spec's dry run (demo's synthetic teacher included) stays clear of torch, Ray and MLflow."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from search.run import main;"
        "codes = [main([path, '--dry-run']) for path in sys.argv[1:]];"
        "heavy = [m for m in ('torch', 'transformers', 'ray', 'mlflow', 'optuna', 'datasets') if m in sys.modules];"
        "print('RESULT', codes, heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *map(str, SPECS)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.stdout.splitlines()[-1] == f"RESULT {[0] * len(SPECS)} []", proc.stderr
