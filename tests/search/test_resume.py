"""Resume after a SIGKILL of the driver: finished trials are neither rerun nor logged twice, and the
search ends with exactly ``search.num_samples`` finished trial runs under one parent run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.search.test_driver import REPO, child_runs, run_cli
from tests.search.fakes import write_spec

NUM_SAMPLES = 6


def start_cli(*args: str, env: dict[str, str], log) -> subprocess.Popen:
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen([sys.executable, "-m", "tests.search.backend", *args], cwd=REPO, env=full_env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(path, pattern: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if re.search(pattern, path.read_text(errors="replace")):
            return
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early:\n{path.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n{path.read_text()[-3000:]}")


def kill_when(spec, pattern: str, env: dict[str, str], log, timeout: float = 180) -> None:
    """Start a search of ``spec``, SIGKILL its driver once ``log`` shows ``pattern``, then whatever Ray
    left of the killed driver's private cluster."""
    with open(log, "w") as out:
        proc = start_cli(str(spec), env=env, log=out)
        try:
            wait_for(log, pattern, proc, timeout=timeout)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            time.sleep(2)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_resume_after_sigkill_logs_every_trial_once(tmp_path):
    # max_params makes some candidates infeasible: they are sized, not trained, and still count.
    write_spec(tmp_path, search="seed: 5", num_samples=NUM_SAMPLES, extra="constraints: {max_params: 30000}")
    env = {"LRL_TRIAL_FN": "tests.search.fakes:fake_trial", "LRL_FAKE_SLEEP": "2"}
    # Kill as soon as the first trial is in MLflow: others are running or queued.
    kill_when(tmp_path / "spec.yaml", rf"trial 1/{NUM_SAMPLES} \w+ .*: quality=", env, tmp_path / "first.log")
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    _, parents, children = child_runs(uri, "fake")
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"
    assert 1 <= len([r for r in children if r.info.status == "FINISHED"]) < NUM_SAMPLES

    resumed = run_cli(str(tmp_path / "spec.yaml"), "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, parents_after, children = child_runs(uri, "fake")
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    trial_ids = [r.data.tags["lrl.trial_id"] for r in children]
    assert len(trial_ids) == len(set(trial_ids)) == NUM_SAMPLES
    assert all(r.info.status == "FINISHED" for r in children)
    assert any(r.data.tags["pareto"] == "true" for r in children)
    for run in children:
        feasible = run.data.metrics["params"] <= 30000
        assert run.data.tags["feasible"] == str(feasible).lower()
        if not feasible:
            assert run.data.tags["pareto"] == "false" and "quality" not in run.data.metrics
    assert f"{NUM_SAMPLES} trials finished, 0 failed" in resumed.stdout
    # Only one Ray experiment folder: the resume continued it rather than starting another.
    assert len(list((tmp_path / "ray").iterdir())) == 1
