"""Multi-fidelity and the time budget in a real Ray search with fake trials (slow): trials stop at
rungs, rung histories reach MLflow, Optuna hears each trial's highest rung, the budget stops sampling,
a killed multi-fidelity search resumes without repeating a trial, with a cheaper rung evaluation
the front's members are scored again in full, also when the driver is killed while rescoring, and a
cheap signal ranks the rungs from rung 0."""

from __future__ import annotations

import json
import re
import signal
from collections import Counter

import pytest

from tests.search.fakes import write_spec
from tests.search.test_driver import child_runs, run_cli
from tests.search.test_resume import kill_when, start_cli

FIDELITY = "fidelity: {min_steps: 10, max_steps: 90, reduction_factor: 3, signal: full}"  # every rung in full
DEPTH = "distill: {steps: 90}"  # hidden 32 is the teacher's: those candidates' last distillation is the depth one


@pytest.mark.slow
def test_multi_fidelity_search_stops_trials_at_rungs(tmp_path):
    import optuna

    spec = write_spec(tmp_path, search=f"seed: 4\n  {FIDELITY}", num_samples=8, extra=DEPTH)
    calls = tmp_path / "calls.txt"
    proc = run_cli(str(spec), env={"LRL_TRIAL_FN": "tests.search.fakes:fake_trial", "LRL_FAKE_CALLS": str(calls)},
                   timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, _, children = child_runs(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "fake")
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    reached = Counter(int(r.data.tags["rung"]) for r in children)
    assert reached[10] >= 1 and reached[90] >= 1 and reached[90] < 8  # some stopped early, some went all the way
    for run in children:
        history = client.get_metric_history(run.info.run_id, "quality")
        rungs = sorted({m.step for m in history})
        assert rungs == [r for r in (10, 30, 90) if r <= int(run.data.tags["rung"])]
        assert run.data.metrics["quality"] == max(history, key=lambda m: m.step).value
    # each (candidate, rung) trained once: a promoted trial continues, it does not start again
    pairs = Counter(tuple(line.split()) for line in calls.read_text().splitlines())
    assert max(pairs.values()) == 1
    # Optuna was told each trial's objectives at the highest rung it reached
    study = optuna.load_study(study_name=children[0].data.tags["lrl.search"],
                              storage=f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}")
    told = sorted(round(t.values[0], 6) for t in study.trials if t.values)
    assert told == sorted(round(r.data.metrics["quality"], 6) for r in children)


@pytest.mark.slow
def test_time_budget_stops_sampling_and_is_recorded(tmp_path):
    spec = write_spec(tmp_path, search="time_budget_s: 6", num_samples=20)
    proc = run_cli(str(spec), env={"LRL_TRIAL_FN": "tests.search.fakes:fake_trial", "LRL_FAKE_SLEEP": "2"},
                   timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, children = child_runs(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "fake")
    assert 2 <= len(children) < 20 and all(r.info.status == "FINISHED" for r in children)
    metrics = parents[0].data.metrics
    assert metrics["budget_s"] == 6 and metrics["spent_s"] > 0 and metrics["gpu_seconds"] == 0
    assert "no new trial" in proc.stderr


@pytest.mark.slow
def test_multi_fidelity_search_resumes_after_a_kill(tmp_path):
    write_spec(tmp_path, search=f"seed: 4\n  {FIDELITY}", num_samples=6, extra=DEPTH)
    env = {"LRL_TRIAL_FN": "tests.search.fakes:fake_trial", "LRL_FAKE_SLEEP": "1", "LRL_FAKE_CALLS": str(tmp_path / "c")}
    kill_when(tmp_path / "spec.yaml", r"trial 2/6 \w+ .*: quality=", env, tmp_path / "first.log", timeout=300)
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    _, _, before = child_runs(uri, "fake")
    kept = {r.data.tags["lrl.trial_id"]: r.data.tags.get("lrl.rungs") for r in before if r.info.status == "FINISHED"}
    resumed = run_cli(str(tmp_path / "spec.yaml"), "--resume", env=env, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, _, children = child_runs(uri, "fake")
    ids = [r.data.tags["lrl.trial_id"] for r in children]
    assert len(ids) == len(set(ids)) == 6 and all(r.info.status == "FINISHED" for r in children)
    after = {r.data.tags["lrl.trial_id"]: r.data.tags.get("lrl.rungs") for r in children}
    assert all(after[trial] == rungs for trial, rungs in kept.items())  # rungs kept as they were
    assert "6 trials finished, 0 failed" in resumed.stdout


@pytest.mark.slow
def test_cheaply_scored_front_members_are_rescored_in_full_also_after_a_kill(tmp_path):
    import os

    cheap = "fidelity: {min_steps: 10, max_steps: 90, reduction_factor: 3, rung_evaluation: {epochs: 1}}"
    spec = write_spec(tmp_path, search=f"seed: 4\n  {cheap}", num_samples=8, extra=DEPTH)
    calls = tmp_path / "calls.txt"
    env = {"LRL_TRIAL_FN": "tests.search.fakes:fake_trial", "LRL_FAKE_CALLS": str(calls)}
    log = tmp_path / "first.log"
    with open(log, "w") as out:  # the driver kills itself after logging a rescored trial's scores, before its tag
        proc = start_cli(str(spec), env={**env, "LRL_CRASH_AT": "rescored-untagged"}, log=out)
        try:
            assert proc.wait(timeout=400) == -signal.SIGKILL, log.read_text()[-3000:]
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert "again with the full evaluation" in log.read_text()
    before_resume = len(calls.read_text().splitlines())
    resumed = run_cli(str(spec), "--resume", env=env, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "8 trials finished, 0 failed" in resumed.stdout
    client, _, children = child_runs(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "fake")
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    front = [r for r in children if r.data.tags["pareto"] == "true"]
    rescored = [r for r in children if r.data.tags.get("rescored") == "true"]
    assert rescored and all(int(r.data.tags["rung"]) < 90 for r in rescored)
    # every front member scored in full: it reached the top rung or was rescored
    assert all(int(r.data.tags["rung"]) == 90 or r in rescored for r in front)
    for run in rescored:  # the full score replaced the cheaper one (half of it in the fake); the history keeps it
        cheaper = json.loads(run.data.tags["lrl.rungs"])[run.data.tags["rung"]]["quality"]
        assert abs(run.data.metrics["quality"] - 2 * cheaper) < 1e-5
        folder = tmp_path / "artifacts" / run.info.run_id
        folder.mkdir(parents=True)
        trial = json.loads(open(client.download_artifacts(run.info.run_id, "trial.json", str(folder))).read())
        card = json.loads(open(client.download_artifacts(run.info.run_id, "model/card.json", str(folder))).read())
        assert trial["quality"] == run.data.metrics["quality"] and card["tasks"]["pos"]["dev"] == trial["scores"]["pos"]
    assert "it keeps its rung scores" not in resumed.stderr  # no rescoring failed

    def full_below_top(lines):
        return [line for line in lines if not line.endswith((" cheap", " 90"))]

    # a rescoring task of the killed driver may still write its line after the kill: count lines per trial
    lines = calls.read_text().splitlines()
    later = full_below_top(lines[before_resume:])
    names = {r.data.tags["lrl.trial_id"]: r.info.run_name.split()[-1] for r in children}
    asked = {names[t] for line in (log.read_text() + resumed.stderr).splitlines() if "again with the full evaluation:" in line
             for t in re.findall(r"(\w+) \(rung \d+\)", line.split("evaluation:")[1])}
    done = Counter(line.split()[0] for line in full_below_top(lines))
    # only what the driver asked to rescore was scored in full below the top rung, at most twice (cut short, again)
    assert set(done) <= asked and max(done.values()) <= 2
    # every rescored trial was scored in full by the resumed driver, and it ran no trial again
    assert {f"{names[r.data.tags['lrl.trial_id']]} {r.data.tags['rung']}" for r in rescored} <= set(later)
    assert not [line for line in lines[before_resume:] if line.endswith((" cheap", " 90"))]


@pytest.mark.slow
def test_a_signal_ranks_the_rungs_from_rung_zero(tmp_path):
    """``signal: mlm`` with ``rung_zero``: every trial is first scored at rung 0 by the signal, the rungs
    below the top only by it, the top rung in full; a trial that stopped has no task scores in MLflow
    (its signal instead) and Optuna heard the signal as its quality."""
    import optuna

    fidelity = "fidelity: {min_steps: 10, max_steps: 90, rung_zero: true, signal: mlm}"
    order = "stages: {order: [trim_vocab, distill, prune, truncate]}"  # rung 0 needs a training-free stage first
    spec = write_spec(tmp_path, search=f"seed: 4\n  {fidelity}", num_samples=8, extra=f"{DEPTH}\n{order}")
    calls = tmp_path / "calls.txt"
    proc = run_cli(str(spec), env={"LRL_TRIAL_FN": "tests.search.fakes:fake_trial", "LRL_FAKE_CALLS": str(calls)},
                   timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split() for line in calls.read_text().splitlines()]
    assert sorted(rung for _, rung, *_ in lines if rung == "0") == ["0"] * 8  # every trial ranked at rung 0
    assert all(rest == ["mlm"] for _, rung, *rest in lines if rung != "90")  # below the top: the signal only
    assert all(rest == [] for _, rung, *rest in lines if rung == "90")  # the top: evaluated in full
    client, _, children = child_runs(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "fake")
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    stopped = [r for r in children if int(r.data.tags["rung"]) < 90]
    top = [r for r in children if int(r.data.tags["rung"]) == 90]
    assert stopped and top and {int(r.data.tags["rung"]) for r in stopped} <= {0, 10, 30}
    for run in stopped:
        assert "quality" not in run.data.metrics and "pos" not in run.data.metrics and run.data.metrics["signal_mlm"] < 0
        assert run.data.tags["pareto"] == "false"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "quality")] == []
        assert json.loads(run.data.tags["lrl.rungs"])["0"]["signal"] == "mlm"
    for run in top:  # its quality history holds the full score only
        assert [m.step for m in client.get_metric_history(run.info.run_id, "quality")] == [90]
    assert any(r.data.tags["pareto"] == "true" for r in top)
    study = optuna.load_study(study_name=children[0].data.tags["lrl.search"],
                              storage=f"sqlite:///{tmp_path / 'mlflow' / 'optuna.db'}")
    signals = sorted(round(-r.data.metrics["signal_mlm"], 6) for r in stopped)  # minus the fake loss
    told = sorted(round(t.values[0], 6) for t in study.trials if t.values)
    assert told == sorted(signals + [round(r.data.metrics["quality"], 6) for r in top])
