"""The driver: identity and paths of a search (fast), and a search whose trial fails (slow, Ray).

The Ray tests run ``python -m search.run`` in a subprocess with the cheap fake trial of
test_trainable.py plugged in through the documented testing hook ``LRL_TRIAL_FN``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from search.driver import experiment_name, pareto_table, spec_hash
from search.spec import load_spec
from tests.search.test_trainable import write_spec

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240, **kwargs):
    """``python -m search.run ARGS`` from the repository root with test-friendly settings."""
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=REPO, env=full_env,
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
    assert lines[1].split()[:6] == ["trial", "layers", "ffn", "hidden", "vocab", "init"]
    assert "12,345" in lines[2] and lines[3].startswith("teacher")


@pytest.mark.slow
def test_failing_trial_is_recorded_retried_and_the_search_continues(tmp_path):
    spec = write_spec(tmp_path, search="seed: 3")
    (tmp_path / "fails").mkdir()
    proc = run_cli(str(spec), env={"LRL_TRIAL_FN": "tests.search.test_trainable:failing_trial",
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
