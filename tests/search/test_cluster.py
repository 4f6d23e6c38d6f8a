"""A two-node Ray cluster on loopback, a search submitted to it as a Ray job with ``--address auto``.

Marked ``cluster`` (off by default and in CI): ``pytest -m cluster tests/search/test_cluster.py``.
The trials use the cheap fake trial (testing hook ``LRL_TRIAL_FN``); storage, cache and MLflow
paths are absolute, as a cluster needs storage every node sees (here: one machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.search.test_driver import REPO, child_runs
from tests.search.fakes import write_spec

RAY = str(Path(sys.executable).parent / "ray")
HEAD_PORT = 6390
DASHBOARD = "http://127.0.0.1:8265"


def ray_cli(*args: str, env: dict[str, str], timeout: float = 120, check: bool = True):
    proc = subprocess.run([RAY, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.cluster
def test_job_submitted_to_a_two_node_cluster(tmp_path):
    spec = write_spec(tmp_path, search="seed: 2", num_samples=4)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # Two nodes on one machine must not share a temp dir: each node's runtime-env agent would
    # garbage-collect the job's unpacked working dir under the other's feet. Short: socket paths.
    worker_temp = tempfile.mkdtemp(prefix="rw", dir="/tmp")
    started = time.time()
    try:
        ray_cli("start", "--head", f"--port={HEAD_PORT}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1", "--object-store-memory=500000000", "--disable-usage-stats", env=env)
        ray_cli("start", f"--address=127.0.0.1:{HEAD_PORT}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                "--object-store-memory=500000000", "--disable-usage-stats", f"--temp-dir={worker_temp}", env=env)
        runtime_env = {"env_vars": {"LRL_TRIAL_FN": "tests.search.fakes:fake_trial",
                                    "LRL_FAKE_SLEEP": "4", "RAY_AUTH_MODE": "disabled",
                                    "MLFLOW_DISABLE_TELEMETRY": "true"}}
        job = ray_cli("job", "submit", "--address", DASHBOARD, "--working-dir", ".",
                      "--runtime-env-json", json.dumps(runtime_env), "--",
                      "python", "-m", "search.run", str(spec), "--address", "auto", env=env, timeout=400)
        print(f"cluster job took {time.time() - started:.0f} s")
        assert "4 trials finished, 0 failed" in job.stdout, job.stdout[-4000:]
        assert "succeeded" in job.stdout.lower()
    finally:
        ray_cli("stop", "--force", env=env, check=False)
        shutil.rmtree(worker_temp, ignore_errors=True)

    client, parents, children = child_runs(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "fake")
    assert len(parents) == 1 and parents[0].data.params["ray_address"] == "auto"
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    nodes = set()
    for run in children:
        local = client.download_artifacts(run.info.run_id, "trial.json", str(tmp_path / run.info.run_id))
        nodes.add(json.loads(Path(local).read_text())["node_id"])
    assert len(nodes) == 2, "trials should have run on both nodes"
