"""The driver: identity of a search, the trial book (records, front, what MLflow is told), and a
search whose trial fails (slow, Ray).

The Ray tests run ``python -m search.run`` in a subprocess with the cheap fake trial of
tests/search/fakes.py plugged in through the tests' backend (``LRL_TRIAL_FN``, tests/search/backend.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import Candidate
from search.book import TrialBook
from search.driver import experiment_name, pareto_markdown, pareto_table, spec_hash
from search.spec import load_spec
from tests.search.fakes import write_spec

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240, **kwargs):
    """``python -m search.run ARGS`` from the repository root with test-friendly settings, through the
    tests' backend (`tests.search.backend`: the hooks ``env`` names, such as ``LRL_TRIAL_FN``)."""
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tests.search.backend", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def child_runs(tracking_uri: str, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lrl.role") == "search"]
    children = [r for r in runs if "lrl.trial_id" in r.data.tags]
    return client, parents, children


def test_spec_hash_ignores_ray_address(tmp_path):
    path = write_spec(tmp_path)
    a = load_spec(path)
    assert spec_hash(a) == spec_hash(load_spec(path, ["ray.address=auto"]))
    assert spec_hash(a) == spec_hash(load_spec(path, ["export={alias: best-quality, out: elsewhere}"]))
    assert spec_hash(a) != spec_hash(load_spec(path, ["search.num_samples=5"]))


def test_experiment_name_numbers_fresh_searches_and_resumes_the_latest(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    storage = tmp_path / "ray"
    first = experiment_name(spec, storage, resume=False)
    assert first == f"fake-{spec_hash(spec)}"
    assert experiment_name(spec, storage, resume=True) == first
    (storage / first).mkdir(parents=True)
    assert experiment_name(spec, storage, resume=False) == f"{first}-2"
    assert experiment_name(spec, storage, resume=True) == first
    (storage / f"{first}-2").mkdir()
    assert experiment_name(spec, storage, resume=True) == f"{first}-2"


def test_pareto_table():
    members = [{"id": "abc", "params": {"num_hidden_layers": "2", "intermediate_size": "16", "hidden_size": "32",
                                        "vocab_size": "full", "init": "stride"},
                "metrics": {"quality": 0.5, "params": 12345.0}}]
    table = pareto_table(members, [("quality", "max"), ("params", "min")], {"quality": 0.8, "params": 40000})
    lines = table.splitlines()
    assert lines[1].split() == ["trial", "layers", "ffn", "hidden", "vocab", "init", "quality", "test_quality", "params",
                                "disk_mb", "latency_ms", "drop_quality_rel"]
    assert "dev scores" in lines[-1]
    assert "12,345" in lines[2] and lines[3].startswith("teacher")
    markdown = pareto_markdown(members, [("quality", "max"), ("params", "min")], {"quality": 0.8, "params": 40000})
    header = next(line for line in markdown.splitlines() if line.startswith("| trial"))
    assert header.count("|") == 13 and "| abc | 2 | 16 | 32 | full | stride | 0.5 |" in markdown


class RecordingTracker:
    """The tracker's interface, recording each call instead of writing to MLflow."""

    def __init__(self):
        self.teacher, self.calls, self.runs = {"quality": 1.0, "params": 1000}, [], 0

    def log_trial(self, trial_id, candidate, result, metrics, *, name, feasible, pareto, run_id=None, rungs=None):
        self.calls.append(("log_trial", trial_id, pareto))
        self.runs += 1
        return run_id or f"run-{trial_id}"

    def log_rescored(self, run_id, trial_id, result, metrics, *, name, feasible, rung):
        self.calls.append(("log_rescored", trial_id, rung, feasible))

    def log_failure(self, trial_id, candidate, error, *, name, attempts=None, run_id=None):
        self.calls.append(("log_failure", trial_id))
        return run_id or f"run-{trial_id}"

    def set_pareto(self, changes):
        self.calls.append(("set_pareto", dict(changes)))

    def register(self, members, wanted, renumber=False):
        self.calls.append(("register", [m["id"] for m in members], renumber))
        self.aliases = dict(wanted)

    def plot(self, records):
        pass


def report(quality, params, feasible=1):
    return {"result_json": json.dumps({"quality": quality, "params": params}), "feasible": feasible}


def test_trial_book_keeps_the_front_and_tells_only_changes():
    tracker = RecordingTracker()
    book = TrialBook(tracker, [("quality", "max"), ("params", "min")], num_samples=5)
    book.finished("a", Candidate(2, 16, 32), report(0.5, 100))
    assert tracker.calls[0] == ("log_trial", "a", True) and tracker.calls[1] == ("set_pareto", {})
    book.finished("b", Candidate(3, 16, 32), report(0.6, 200))  # a stays: smaller
    book.finished("c", Candidate(3, 37, 32), report(0.4, 300))  # dominated
    book.finished("d", Candidate(2, 37, 32), report(0.9, 50, feasible=0))  # infeasible: never on the front
    book.failed("e", Candidate(1, 16, 16), "Traceback\nFloatingPointError: nan", attempts=2)
    assert book.front() == {"a", "b"}
    assert [r["id"] for r in book.members()] == ["b", "a"]
    assert ("log_trial", "c", False) in tracker.calls and ("log_trial", "d", False) in tracker.calls
    assert all(call[1] == {} for call in tracker.calls if call[0] == "set_pareto")
    assert tracker.aliases == {"best-quality": "run-b", "best-params": "run-a"}  # the book chooses them
    book.finished("f", Candidate(2, 16, 16), report(0.7, 90))  # dominates a and b
    assert tracker.calls[-2:] == [("set_pareto", {"run-a": False, "run-b": False}), ("register", ["f"], False)]
    book.finished("f", Candidate(2, 16, 16), report(0.1, 1))  # already logged: nothing changes
    assert book.front() == {"f"} and tracker.runs == 5
    assert book.finalise() == [book.records["f"]] and tracker.calls[-1] == ("register", ["f"], True)
    assert tracker.aliases == {"best-quality": "run-f", "best-params": "run-f", "pareto-1": "run-f"}


def test_the_book_measures_drops_against_the_reference_it_was_given():
    tracker = RecordingTracker()  # its own teacher copy (quality 1.0) is not the book's
    book = TrialBook(tracker, [("quality", "max"), ("params", "min")], num_samples=1,
                     teacher={"quality": 0.8, "params": 400})
    book.finished("a", Candidate(2, 16, 32), report(0.6, 100))
    assert book.records["a"]["metrics"]["drop_quality"] == pytest.approx(0.2)
    assert book.records["a"]["metrics"]["compression"] == pytest.approx(0.75)


def test_trial_book_resumes_from_records():
    tracker = RecordingTracker()
    records = [
        {"id": "a", "run_id": "ra", "params": {}, "metrics": {"quality": 0.5, "params": 100.0}, "failed": False,
         "finished": True, "feasible": True, "pareto": True},
        {"id": "b", "run_id": "rb", "params": {}, "metrics": {}, "failed": False, "finished": False,
         "feasible": True, "pareto": False},  # half-written by a killed driver
        {"id": "c", "run_id": "rc", "params": {}, "metrics": {}, "failed": True, "finished": True,
         "feasible": True, "pareto": False},
    ]
    book = TrialBook(tracker, [("quality", "max"), ("params", "min")], num_samples=3, records=records)
    assert book.logged("a") and not book.logged("b") and not book.logged("c")
    book.finished("a", Candidate(2, 16, 32), report(0.9, 1))
    assert tracker.calls == []
    book.finished("b", Candidate(2, 16, 16), report(0.6, 100))
    book.finished("c", Candidate(3, 16, 16), report(0.7, 400))  # a failure retried after the resume
    assert [c[:2] for c in tracker.calls if c[0] == "log_trial"] == [("log_trial", "b"), ("log_trial", "c")]
    assert book.records["b"]["run_id"] == "rb" and book.records["c"]["run_id"] == "rc"
    assert book.front() == {"b", "c"}
    assert ("set_pareto", {"ra": False}) in tracker.calls


WRITES = ("create_run", "update_run", "log_batch", "log_metric", "log_param", "set_tag", "delete_tag",
          "set_terminated", "log_text", "log_dict", "log_artifact", "log_artifacts", "log_figure",
          "create_registered_model", "create_model_version", "set_model_version_tag",
          "set_registered_model_alias", "delete_registered_model_alias")


def test_mlflow_writes_grow_linearly_with_the_trials(tmp_path):
    """50 fake trials through the real tracker on SQLite: each trial costs the same few writes, however
    many came before (re-tagging every earlier run, as before, would make the cost grow with n)."""
    import random

    from search.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "writes", search="s", spec_hash="h",
                      objectives=[("quality", "max"), ("params", "min")], registered_model="writes-student")
    writes = []
    for name in WRITES:
        method = getattr(tracker.client, name)
        setattr(tracker.client, name, lambda *a, _m=method, _n=name, **k: writes.append(_n) or _m(*a, **k))
    tracker.start(spec_yaml="x: 1\n", params={}, resume=False)
    tracker.log_teacher({"quality": 0.9, "params": 10_000})
    book = TrialBook(tracker, [("quality", "max"), ("params", "min")], num_samples=50)
    rng = random.Random(0)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    per_trial = []
    for i in range(50):
        before = len(writes)
        params = rng.randint(100, 10_000)
        result = {"quality": rng.random() * params / 10_000, "params": params, "model_dir": str(model)}
        book.finished(f"t{i}", Candidate(2, 16, 32), {"result_json": json.dumps(result), "feasible": 1})
        per_trial.append(len(writes) - before)
    front = book.front()
    assert 2 <= len(front) < 50
    assert max(per_trial) <= 4 * min(per_trial) and sum(per_trial[25:]) <= 1.25 * sum(per_trial[:25])
    assert sum(per_trial) <= 12 * 50, per_trial
    tags = {r["id"]: r["pareto"] for r in tracker.read_records()}
    assert {trial for trial, on in tags.items() if on} == front and len(tags) == 50


@pytest.mark.slow
def test_failing_trial_is_recorded_retried_and_the_search_continues(tmp_path):
    spec = write_spec(tmp_path, search="seed: 3")
    (tmp_path / "fails").mkdir()
    proc = run_cli(str(spec), env={"LRL_TRIAL_FN": "tests.search.fakes:failing_trial",
                                   "LRL_FAKE_FAILS": str(tmp_path / "fails")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    failing = (tmp_path / "fails" / "failing").read_text()
    attempts = (tmp_path / "fails" / "attempts").read_text().split()
    assert attempts == [failing] * 2  # max_failures: 1 -> one retry
    _, parents, children = child_runs(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "fake")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    by_trial = {r.data.tags["lrl.trial_id"]: r for r in children}
    assert len(by_trial) == len(children) == 4
    failed = by_trial[failing]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"].endswith("distillation loss is nan at step 3")
    assert failed.data.tags["pareto"] == "false" and failed.data.tags["attempts"] == "2"
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == 3
    assert any(r.data.tags["pareto"] == "true" for r in finished)
    assert "failed after 2 attempts" in proc.stderr
    assert "3 trials finished, 1 failed" in proc.stdout


def test_trial_book_keeps_rungs_and_seeds_a_restart():
    tracker = RecordingTracker()
    book = TrialBook(tracker, [("quality", "max"), ("params", "min")], num_samples=2)
    book.rung_result("a", {"rung": 10, "quality": 0.3, "params": 100, "feasible": 1})
    book.finished("a", Candidate(2, 16, 32), {**report(0.5, 100), "rung": 30, "quality": 0.5, "params": 100})
    book.finished("b", Candidate(2, 16, 16), {**report(0.4, 50), "rung": 10, "quality": 0.4, "params": 50})
    assert book.records["a"]["rungs"] == {10: {"quality": 0.3, "params": 100.0, "feasible": 1.0},
                                          30: {"quality": 0.5, "params": 100.0, "feasible": 1.0}}
    assert book.records["a"]["rung"] == 30 and book.records["b"]["rung"] == 10
    assert book.rung_history() == {10: {"a": {"quality": 0.3, "params": 100.0, "feasible": 1.0},
                                        "b": {"quality": 0.4, "params": 50.0, "feasible": 1.0}},
                                   30: {"a": {"quality": 0.5, "params": 100.0, "feasible": 1.0}}}


def test_trial_book_rescores_front_members_below_the_top_rung_until_the_front_is_scored_in_full():
    tracker = RecordingTracker()
    book = TrialBook(tracker, [("quality", "max"), ("params", "min")], num_samples=4)
    for trial, rung, quality, params in (("a", 90, 0.6, 200), ("b", 10, 0.2, 50), ("c", 10, 0.15, 60),
                                         ("e", 30, 0.4, 100)):
        book.finished(trial, Candidate(2, 16, 32), {**report(quality, params), "rung": rung, "quality": quality,
                                                    "params": params})
    assert book.front() == {"a", "b", "e"}  # c: dominated by b's cheaper score
    full = {"b": report(0.3, 50, feasible=0), "c": report(0.35, 60)}  # b's full score breaks a constraint
    batches = []

    def run(trials):
        batches.append([(trial, rung) for trial, _, rung in trials])
        for trial, _, _ in trials:
            yield (trial, full[trial], None) if trial in full else (trial, None, "Traceback\nRuntimeError: out of memory")

    candidates = {trial: Candidate(2, 16, 32) for trial in "abce"}
    assert book.rescore_front(run, candidates, top=90) == 2
    # b left the front, so c (cheaply scored) joined it and was rescored in a second round; e failed and
    # keeps its rung score; a reached the top rung and is never rescored
    assert batches == [[("b", 10), ("e", 30)], [("c", 10)]]
    assert [c for c in tracker.calls if c[0] == "log_rescored"] == [("log_rescored", "b", 10, False),
                                                                    ("log_rescored", "c", 10, True)]
    assert book.front() == {"a", "c", "e"} and {t for t, r in book.records.items() if r["pareto"]} == {"a", "c", "e"}
    assert book.records["c"]["metrics"]["quality"] == 0.35 and book.records["c"]["rescored"]
    assert book.records["e"]["metrics"]["quality"] == 0.4 and not book.records["e"].get("rescored")
    assert book.rescore_front(run, candidates, top=90) == 2 and len(batches) == 3  # e is tried again, nothing else
    assert batches[-1] == [("e", 30)]


def test_resume_without_the_original_set_finds_the_search_by_its_stored_spec(tmp_path, caplog):
    from search.driver import SEARCH_RECORD, record_search, resume_spec
    from search.spec import SpecError

    path = write_spec(tmp_path)
    original = load_spec(path, ["search.num_samples=3", "space.ffn=[16]"])
    storage = tmp_path / "ray"
    name = experiment_name(original, storage, resume=False)
    record_search(storage / name, original, str(path), ["search.num_samples=3", "space.ffn=[16]"])
    assert json.loads((storage / name / SEARCH_RECORD).read_text())["overrides"] == ["search.num_samples=3",
                                                                                     "space.ffn=[16]"]
    # the same --set: found by its hash, unchanged
    assert resume_spec(original, str(path)) is original
    # no --set: the stored spec, with this run's Ray address
    plain = load_spec(path, ["ray.address=auto"])
    found = resume_spec(plain, str(path))
    assert spec_hash(found) == spec_hash(original) and found.search.num_samples == 3 and found.ray.address == "auto"
    assert experiment_name(found, storage, resume=True) == name
    assert "differs from" in caplog.text and "search.num_samples=3" in caplog.text
    # a field the original --set did not touch: every differing field named, one line
    with pytest.raises(SpecError) as info:
        resume_spec(load_spec(path, ["space.hidden=[16]"]), str(path))
    (line,) = info.value.problems
    assert "search.num_samples (3 then, 4 now)" in line and "space.ffn ([16] then, [16, 37] now)" in line
    assert "space.hidden ([16, 32] then, [16] now)" in line and "--set search.num_samples=3 --set space.ffn=[16]" in line
    # another spec file has nothing stored: a new search
    (tmp_path / "other").mkdir()
    other = write_spec(tmp_path / "other")
    fresh = load_spec(other)
    assert resume_spec(fresh, str(other)) is fresh


def test_a_trial_stopped_at_rung_zero_is_a_rung_result_and_rescored():
    """Rung 0 (the student before its last distillation) is a rung like any other: recorded, and
    rescored in full when its cheap score puts it on the front."""
    tracker = RecordingTracker()
    book = TrialBook(tracker, [("quality", "max"), ("params", "min")], num_samples=2)
    book.finished("a", Candidate(2, 16, 32), {**report(0.6, 200), "rung": 90, "quality": 0.6, "params": 200})
    book.finished("z", Candidate(1, 16, 16), {**report(0.1, 20), "rung": 0, "quality": 0.1, "params": 20})
    assert book.records["z"]["rung"] == 0 and book.records["z"]["rungs"] == {0: {"quality": 0.1, "params": 20.0,
                                                                                  "feasible": 1.0}}
    assert book.rung_history()[0] == {"z": {"quality": 0.1, "params": 20.0, "feasible": 1.0}}

    def run(trials):
        assert [(trial, rung) for trial, _, rung in trials] == [("z", 0)]
        yield "z", report(0.2, 20), None

    assert book.rescore_front(run, {"a": Candidate(2, 16, 32), "z": Candidate(1, 16, 16)}, top=90) == 1
    assert book.records["z"]["metrics"]["quality"] == 0.2
