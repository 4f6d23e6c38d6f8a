"""Load: 50 trials, 4 at a time, against the SQLite MLflow store and the SQLite Optuna study (fake
trials through the testing hook ``LRL_TRIAL_FN``). Every write goes through the driver, so the
search ends with 0 "database is locked" errors, one finished run per trial and the Pareto tags equal
to the front of the logged metrics."""

from __future__ import annotations

import time

import pytest

from search.pareto import pareto_front
from tests.search.fakes import write_spec
from tests.search.test_driver import child_runs, run_cli

NUM_SAMPLES = 50


@pytest.mark.slow
def test_fifty_trials_four_at_a_time(tmp_path):
    # layers x ffn x hidden x vocab: 8 x 2 x 2 x 2 = 64 candidates; half a CPU each runs 4 on 2 cores
    spec = write_spec(tmp_path, space="layers: [1, 2, 3, 4]", search="seed: 7", num_samples=NUM_SAMPLES)
    started = time.time()
    times = tmp_path / "times.txt"
    proc = run_cli(str(spec), "--set", "search.max_concurrent=4", "--set", "search.resources.cpu=0.5", env={"LRL_TRIAL_FN": "tests.search.fakes:timed_trial", "LRL_FAKE_SLEEP": "2",
                                   "LRL_FAKE_TIMES": str(times)}, timeout=900)
    seconds = time.time() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert output.lower().count("database is locked") == 0
    assert f"{NUM_SAMPLES} trials finished, 0 failed" in proc.stdout
    _, parents, children = child_runs(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "fake")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    ids = {run.data.tags["lrl.trial_id"] for run in children}
    assert len(children) == len(ids) == NUM_SAMPLES and all(r.info.status == "FINISHED" for r in children)
    records = [{"id": r.data.tags["lrl.trial_id"], "metrics": r.data.metrics, "failed": False, "finished": True,
                "feasible": r.data.tags["feasible"] == "true"} for r in children]
    front = pareto_front(records, [("quality", "max"), ("params", "min")])
    assert front == {r.data.tags["lrl.trial_id"] for r in children if r.data.tags["pareto"] == "true"}
    spans = [tuple(map(float, line.split())) for line in times.read_text().splitlines()]
    overlap = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert overlap == 4, f"at most {overlap} trials ran at once"
    print(f"{NUM_SAMPLES} trials, 4 at a time: {seconds:.0f} s, {len(front)} on the front")
