"""Screening (``search.screen``): the ranking, its record, the spec's checks, and (slow) a real Ray
search with fake trials whose first trials are the best-ranked candidates, and one killed while
screening that screens only the rest when resumed."""

from __future__ import annotations

import json

import pytest

from search.screening import ranked, read_screening, write_screening
from search.spec import SpecError, load_spec
from tests.search.fakes import write_spec
from tests.search.test_driver import child_runs, run_cli
from tests.search.test_resume import kill_when


def _record(name: str, value: float | None, params: int) -> dict:
    return {"label": name, "value": value, "params": params}


def test_ranking_puts_the_non_dominated_first_and_failures_last():
    records = [_record("big-good", 0.9, 300), _record("small-bad", 0.2, 100), _record("mid-worse", 0.1, 200),
               _record("failed", None, 50), _record("mid-good", 0.6, 200)]
    # larger is better: the front (0.9, 300), (0.6, 200), (0.2, 100); its ends first (crowding), then
    # the middle; then the dominated one; the failed one last
    assert [r["label"] for r in ranked(records, "max")] == ["big-good", "small-bad", "mid-good", "mid-worse", "failed"]
    # smaller is better (a loss): the front is (0.2, 100) and (0.1, 200), both ends
    assert {r["label"] for r in ranked(records, "min")[:2]} == {"mid-worse", "small-bad"}


def test_the_record_is_read_back_only_for_the_same_signal(tmp_path):
    path = tmp_path / "screening.json"
    write_screening(path, "capped", "max", [_record("a", 0.5, 10)])
    assert list(read_screening(path, "capped")) == ["a"]
    assert read_screening(path, "mlm") == {} and read_screening(tmp_path / "absent.json", "capped") == {}
    path.write_text("{broken")
    assert read_screening(path, "capped") == {}


@pytest.mark.parametrize(("setting", "field"), [
    ("screen: {signal: distill}", "search.screen.signal"),
    ("screen: {signal: loss}", "search.screen.signal"),
    ("screen: {evaluation: {epochs: 0}}", "search.screen.evaluation.epochs"),
])
def test_a_bad_screen_setting_names_its_field(tmp_path, setting, field):
    with pytest.raises(SpecError) as error:
        load_spec(write_spec(tmp_path, search=setting))
    assert any(field in line for line in error.value.problems), error.value.problems


def test_a_signal_that_needs_tasks_is_refused_without_them(tmp_path):
    from tests.search.test_spec import minimal
    from tests.search.test_spec import write_spec as write_minimal

    data = minimal(search={"screen": {"signal": "probe"}},
                   objectives=[{"metric": "params", "direction": "min"}, {"metric": "latency_ms", "direction": "min"}])
    data["data"]["tasks"] = {}  # a search for size and speed alone
    path = write_minimal(tmp_path, data)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert list(error.value.problems) == [f"{path}: search.screen.signal: probe scores the labelled tasks and data.tasks "
                                    "is empty; add a task or screen by mlm"]
    data["search"]["screen"]["signal"] = "mlm"
    assert load_spec(write_minimal(tmp_path / "mlm", data)).search.screen.signal == "mlm"


def test_screening_defaults_to_the_capped_evaluation(tmp_path):
    spec = load_spec(write_spec(tmp_path, search="screen: {}"))
    assert spec.search.screen.signal == "capped"
    assert (spec.search.screen.evaluation.seeds, spec.search.screen.evaluation.epochs) == (1, 2)


@pytest.mark.slow
def test_a_screened_search_runs_the_best_ranked_candidates_first(tmp_path):
    spec = write_spec(tmp_path, search="seed: 4\n  screen: {signal: capped}", num_samples=4)
    calls = tmp_path / "calls.txt"
    env = {"LRL_TRIAL_FN": "tests.search.fakes:fake_trial", "LRL_FAKE_CALLS": str(calls)}
    proc = run_cli(str(spec), env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "ray").glob("*/screening.json")
    screening = json.loads(path.read_text())
    order = [c["label"] for c in screening["candidates"]]
    assert len(order) == 24 and screening["signal"] == "capped"  # 3 x 2 x 2 x 2, every one screened once
    assert sorted(line.split()[0] for line in calls.read_text().splitlines() if line.endswith(" screen")) == sorted(order)
    # the first is non-dominated by the fake signal (quality in full, larger is better) and parameters,
    # and the first four were the trials
    points = [(c["value"], c["params"]) for c in screening["candidates"]]
    value, params = points[0]
    assert not any((v > value and p <= params) or (v >= value and p < params) for v, p in points)
    client, (parent,), children = child_runs(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "fake")
    assert sorted(r.info.run_name.split()[-1] for r in children) == sorted(order[:4])
    assert "screening.json" in [a.path for a in client.list_artifacts(parent.info.run_id)]


@pytest.mark.slow
def test_a_search_killed_while_screening_screens_only_the_rest_on_resume(tmp_path):
    spec = write_spec(tmp_path, search="seed: 4\n  screen: {signal: mlm}", num_samples=3)
    calls = tmp_path / "calls.txt"
    env = {"LRL_TRIAL_FN": "tests.search.fakes:fake_trial", "LRL_FAKE_CALLS": str(calls), "LRL_FAKE_SLEEP": "0.5"}
    kill_when(spec, r"screened \S+: mlm \S+ \(6 of 24\)", env, tmp_path / "first.log", timeout=300)
    (path,) = (tmp_path / "ray").glob("*/screening.json")
    kept = {c["label"] for c in json.loads(path.read_text())["candidates"]}
    assert 6 <= len(kept) < 24
    before = len(calls.read_text().splitlines())
    resumed = run_cli(str(spec), "--resume", env=env, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = [line.split()[0] for line in calls.read_text().splitlines()[before:] if line.endswith(" screen")]
    assert sorted(again) == sorted(set(again)) and not set(again) & kept  # only the ones it lacked, once
    screening = json.loads(path.read_text())
    assert len(screening["candidates"]) == 24 and screening["better"] == "min"
    _, _, children = child_runs(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "fake")
    assert sorted(r.info.run_name.split()[-1] for r in children) == sorted(c["label"] for c in screening["candidates"][:3])
