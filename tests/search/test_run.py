"""The command line: dry run, errors with exit code 2, --set, and the hand-over to the search."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from search import schema as schema_module
from search import teachers
from search.run import main
from tests.search.test_spec import MBERT, minimal, write_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    teachers._hub_config.cache_clear()


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def test_dry_run_prints_every_candidate(tmp_path, capsys):
    space = {"layers": [6], "ffn": [2048, 3072], "hidden": [312, 768], "vocab": [40000, "full"]}
    path = write_spec(tmp_path, minimal(space=space, constraints={"max_params": 100_000_000}))
    code, out, err = run([path, "--dry-run"], capsys)
    assert (code, err) == (0, "")
    table, builds = out.split("\n\n")
    lines = table.splitlines()
    assert "278,295,186 parameters" in lines[0]
    rows = {tuple(line.split()[1:5]): line for line in lines[2:-1]}
    assert len(rows) == 8
    assert "22,812,688" in rows[("6", "2048", "312", "40000")] and "91.8%" in rows[("6", "2048", "312", "40000")]
    assert "88,543,314" in rows[("6", "2048", "312", "full")]
    assert "226,324,626" in rows[("6", "2048", "768", "full")] and "x params > max_params" in rows[("6", "2048", "768", "full")]
    assert "235,767,954" in rows[("6", "3072", "768", "full")]
    assert lines[-1].startswith("8 candidates, 6 within constraints (max_params=100,000,000)")
    # 6 feasible candidates need 4+3+3+3+2+2 builds; shared: 1 distill, 1 prune, 2 truncate (after the
    # pruned or the unpruned student), 4 trims
    assert builds.splitlines()[0] == "stage builds for 6 candidates within constraints: 8 with reuse, 17 without"
    assert builds.splitlines()[1].split()[:3] == ["adapt", "(teacher)", "1"]
    assert builds.splitlines()[2].split()[:2] == ["distill", "1"]


def test_dry_run_mbert_and_set(tmp_path, capsys):
    path = write_spec(tmp_path, minimal(), teacher=MBERT)
    code, out, _ = run([path, "--dry-run", "--set", "space.hidden=[312]", "--set", "space.vocab=full",
                        "--set", "space.init=[last_k]"], capsys)
    assert code == 0
    assert "177,974,523 parameters" in out.splitlines()[0] and "(bert)" in out.splitlines()[0]
    assert out.splitlines()[2].split()[1:6] == ["6", "2048", "312", "full", "47,710,587"]


def test_dry_run_says_what_trimming_needs_of_the_corpus(tmp_path, capsys):
    """Given the corpus' line count (--corpus-lines, else data.corpus.max_lines), each trimmed size says how
    many tokens it needs at least: a size's pieces must each occur trim_vocab.min_count times."""
    path = write_spec(tmp_path, minimal(space={"vocab": [40000, 10000, "full"]}, trim_vocab={"min_count": 2}))
    def trim(out: str) -> list[str]:
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("trim_vocab keeps"))
        return lines[start : start + 2]

    code, out, _ = run([path, "--dry-run", "--corpus-lines", "2000"], capsys)
    assert code == 0 and trim(out)[0].startswith("trim_vocab keeps the pieces that occur at least 2 times")
    assert trim(out)[1] == ("  of 2,000 lines: 40,000 needs at least 80,000 tokens, 40.0 a line; 10,000 needs at least "
                            "20,000 tokens, 10.0 a line")
    code, out, _ = run([path, "--dry-run", "--set", "data.corpus.max_lines=500", "--set", "space.vocab=[4000]"], capsys)
    assert trim(out)[1] == "  of 500 lines: 4,000 needs at least 8,000 tokens, 16.0 a line"
    code, out, _ = run([path, "--dry-run", "--set", "space.vocab=[full]"], capsys)
    assert "trim_vocab keeps" not in out


def test_dry_run_writes_nothing(tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setattr(schema_module, "REPO_ROOT", repo)  # where the default mlflow/ and .cache/ would go
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_spec(tmp_path / "specs", minimal())
    before = tree(tmp_path)
    code, out, _ = run([path, "--dry-run"], capsys)
    assert code == 0 and out
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["{spec}", "--dry-run", "--set", "space.hidden"],
         "error: --set space.hidden: expected dotted.key=value, e.g. space.hidden=[312,456]"),
        (["{spec}", "--dry-run", "--set", "space.hidden=[310]"],
         "error: {spec}: space.hidden[0]: 310 is not divisible by num_attention_heads=12 (from --set space.hidden=[310])"),
        (["{spec}", "--dry-run", "--set", "space.layers=[24]"],
         "error: {spec}: space.layers[0]: 24 is larger than the teacher's num_hidden_layers=12 (from --set space.layers=[24])"),
        (["{spec}", "--dry-run", "--set", "space.ffn=[]"],
         "error: {spec}: space.ffn: needs at least one choice (from --set space.ffn=[])"),
        (["{spec}", "--dry-run", "--set", "space.vocab=[300000]"],
         "error: {spec}: space.vocab[0]: 300000 is larger than the teacher's vocab_size=250002 (from --set space.vocab=[300000])"),
        (["{spec}", "--dry-run", "--set", "teacher.model=/no/such/dir"],
         "error: {spec}: teacher.model: /no/such/dir: no such directory (from --set teacher.model=/no/such/dir)"),
        (["{spec}", "--dry-run", "--set", "space.layres=[6]"],
         "error: {spec}: space.layres: unknown key; expected one of: layers, ffn, hidden, vocab, init (from --set space.layres=[6])"),
        (["{tmp}/missing.yaml", "--dry-run"], "error: {tmp}/missing.yaml: no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, expected):
    """The whole of stderr is the one expected line; nothing on stdout."""
    path = write_spec(tmp_path, minimal())
    argv = [a.format(spec=path, tmp=tmp_path) for a in argv]
    code, out, err = run(argv, capsys)
    assert (code, out, err) == (2, "", expected.format(spec=path, tmp=tmp_path) + "\n")


def test_yaml_error_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("language: mt\nspace:\n  hidden: [312\n")
    code, out, err = run([path, "--dry-run"], capsys)
    assert code == 2 and out == "" and err.startswith(f"error: {path}:4:") and len(err.splitlines()) == 1


def test_all_problems_then_exit_2(tmp_path, capsys):
    """A spec with five problems: one line for each, all at once, and nothing else."""
    path = write_spec(tmp_path, minimal(space={"hidden": [310, 1000], "layers": [6, 6]}, search={"sampler": "grid"}))
    code, out, err = run([path, "--dry-run", "--set", "nonsense"], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "error: --set nonsense: expected dotted.key=value, e.g. space.hidden=[312,456]",
        f"error: {path}: search.sampler: Input should be 'nsga2' or 'tpe' (got 'grid')",
        f"error: {path}: space.layers[1]: 6 appears twice",
        f"error: {path}: space.hidden[0]: 310 is not divisible by num_attention_heads=12",
        f"error: {path}: space.hidden[1]: 1000 is larger than the teacher's hidden_size=768",
    ]


def test_without_dry_run_the_driver_gets_spec_and_args(tmp_path, capsys, monkeypatch):
    calls = []
    driver = types.ModuleType("search.driver")
    driver.run_search = lambda spec, resume, **origin: calls.append((spec, resume, origin)) or 0
    driver.resume_spec = lambda spec, spec_file, overrides: spec
    monkeypatch.setitem(sys.modules, "search.driver", driver)
    path = write_spec(tmp_path, minimal())
    code, _, _ = run([path, "--resume", "--address", "auto", "--set", "search.num_samples=3"], capsys)
    assert code == 0
    ((spec, resume, origin),) = calls
    assert spec.ray.address == "auto" and spec.search.num_samples == 3 and resume is True
    assert origin == {"spec_file": str(path), "overrides": ["search.num_samples=3", "ray.address=auto"]}


def test_driver_errors_exit_2(tmp_path, capsys, monkeypatch):
    from pipeline.errors import UsageError

    path = write_spec(tmp_path, minimal())
    driver = types.ModuleType("search.driver")

    def fail(spec, resume, **origin):
        raise UsageError("the stage cache is locked")

    driver.run_search = fail
    driver.resume_spec = lambda spec, spec_file, overrides: spec
    monkeypatch.setitem(sys.modules, "search.driver", driver)
    assert run([path], capsys)[::2] == (2, "error: the stage cache is locked\n")


def test_cli_dry_run_is_fast_and_imports_no_heavy_package(tmp_path):
    """A real process: the dry run needs neither torch, transformers, Ray nor MLflow, and < 2 s (CPU time,
    so that a busy machine does not make it flaky)."""
    path = write_spec(tmp_path, minimal(space={"layers": [4, 6, 8], "hidden": [312, 456, 564, 768]}))
    code = (
        "import sys, time; t = time.process_time(); from search.run import main; rc = main(sys.argv[1:]);"
        "heavy = [m for m in ('torch', 'transformers', 'ray', 'mlflow', 'optuna', 'datasets') if m in sys.modules];"
        "print('HEAVY', heavy, 'SECONDS', time.process_time() - t); sys.exit(rc)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(path), "--dry-run"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.splitlines()[-1].split()
    assert last[:2] == ["HEAVY", "[]"]
    assert float(last[-1]) < 2.0


def test_python_dash_m_on_the_maltese_spec():
    proc = subprocess.run([sys.executable, "-m", "search.run", "specs/maltese.yaml", "--dry-run", "--set", "space.layers=[13]"],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "error: specs/maltese.yaml: space.layers[0]: 13 is larger than the teacher's num_hidden_layers=12"
        " (from --set space.layers=[13])\n"
    )
