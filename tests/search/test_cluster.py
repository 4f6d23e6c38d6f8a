"""A two-node Ray cluster on loopback, searches submitted to it as Ray jobs with ``--address auto``,
the README's recipe: ``ray job submit --working-dir . -- python -m search.run SPEC --address auto``.

Marked ``cluster`` (off by default and in CI): ``pytest -m cluster tests/search/test_cluster.py``.

- `test_jobs_on_a_two_node_cluster`: the trials run the real pipeline on a tiny teacher
  (`tests.search.fakes.real_trial_on_node` adds the node's id to `pipeline.trial.run_trial`'s result).
  The spec leaves the folders and the MLflow store at their defaults: run as a job, they must not point
  into the job's unpacked package, and the trials on the worker node must find the teacher, the data
  and the stages the driver's node built.
- `test_readme_recipe_on_the_demo_spec`: the recipe as the README gives it, on ``specs/demo.yaml``
  (no testing hook: the driver prepares the synthetic teacher itself), with both nodes in one temp
  folder, as two ``ray start`` on one machine (or a shared ``RAY_TMPDIR``) have them. The node check's
  task on the second node then unpacks the job's package again where the driver runs; the driver used
  to die in ``prepare()`` with ``FileNotFoundError`` from ``os.getcwd()`` (`search.folders.leave_ray_package`).
- `test_an_unshared_cache_folder_is_refused_in_one_line`: as root, the worker node runs in a private
  mount namespace with an empty tmpfs over one folder: a search whose ``search.cache_dir`` lies there
  must stop, before any trial, with one line naming the field, as on a cluster without shared storage.
  Skipped, with the reason, where it cannot run (not root, or no ``unshare``).
"""

from __future__ import annotations

import json
import os
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import build_tiny_model
from tests.search.test_driver import REPO, child_runs
from tests.search.test_kills import TRAIN

RAY = str(Path(sys.executable).parent / "ray")
HEAD_PORT = 6390
DASHBOARD = "http://127.0.0.1:8265"


def ray_cli(*args: str, env: dict[str, str], timeout: float = 120, check: bool = True, command=None):
    proc = subprocess.run(command or [RAY, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def cluster_spec(folder: Path, teacher: Path, shared_data: Path, sentences: list[str]) -> Path:
    """No storage_path, cache_dir or tracking_uri: the defaults must work on the cluster."""
    (folder / "corpus.txt").write_text("\n".join(sentences[:400]) + "\n", encoding="utf-8")
    (folder / "heldout.txt").write_text("\n".join(sentences[400:440]) + "\n", encoding="utf-8")
    spec = folder / "spec.yaml"
    spec.write_text(f"""\
teacher: {{model: {teacher}, adapt: {{enabled: false}}}}
language: mt
data:
  corpus: {{source: corpus.txt}}
  heldout: {{source: heldout.txt}}
  tasks: {{pos: {{source: {shared_data / 'mt' / 'pos'}}}}}
distill: {{steps: 30, {TRAIN}}}
truncate: {{distill: {{steps: 10, {TRAIN}}}}}
prune: {{batch_size: 8, max_length: 48, max_batches: 2}}
evaluation: {{seeds: [1], pos: {{epochs: 1, batch_size: 16, max_length: 48, max_train_examples: 32, max_eval_examples: 32}}}}
space: {{layers: [2], ffn: [16, 37], hidden: [16, 32], vocab: [full]}}
objectives: [{{metric: pos}}, {{metric: params}}]
search: {{num_samples: 4, max_concurrent: 2, resources: {{cpu: 1}}, seed: 4}}
mlflow: {{experiment: cluster}}
""")
    return spec


ENV_VARS = {"RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _env() -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return env


@contextlib.contextmanager
def two_nodes(*, shared_temp: bool, private: Path | None = None):
    """A head node and a worker node on loopback, one CPU each, stopped afterwards.

    Args:
        shared_temp: both nodes in one temp folder (``ray start`` twice on one machine, or one
            ``RAY_TMPDIR``), else the worker in its own.
        private: run the worker in a private mount namespace with an empty tmpfs over this folder (root).
    """
    env = _env()
    # short paths: Ray's socket paths must stay under 108 characters
    head_temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    worker_temp = head_temp if shared_temp else tempfile.mkdtemp(prefix="rw", dir="/tmp")
    try:
        ray_cli("start", "--head", f"--port={HEAD_PORT}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1", "--object-store-memory=500000000", "--disable-usage-stats",
                f"--temp-dir={head_temp}", env=env)
        worker = ["start", f"--address=127.0.0.1:{HEAD_PORT}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                  "--object-store-memory=500000000", "--disable-usage-stats", f"--temp-dir={worker_temp}"]
        if private is not None:
            script = f"mount -t tmpfs tmpfs {private} && exec {RAY} {' '.join(worker)}"
            ray_cli(*worker, env=env, command=["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
        else:
            ray_cli(*worker, env=env)
        yield env
    finally:
        ray_cli("stop", "--force", env=env, check=False)
        for folder in {head_temp, worker_temp}:
            shutil.rmtree(folder, ignore_errors=True)


def submit(env: dict[str, str], runtime_env: dict, *args: str, timeout: float = 600, module: str = "search.run"):
    """``ray job submit --working-dir . -- python -m search.run ARGS --address auto`` from the checkout
    (``module``: the tests' backend, `tests.search.backend`, for the hooks the runtime environment names)."""
    return ray_cli("job", "submit", "--address", DASHBOARD, "--working-dir", ".", "--runtime-env-json",
                   json.dumps(runtime_env), "--", "python", "-m", module, *args, "--address", "auto",
                   env=env, timeout=timeout, check=False)


@pytest.mark.cluster
def test_jobs_on_a_two_node_cluster(tmp_path, shared_data, maltese_sentences):
    teacher = build_tiny_model("xlmr", maltese_sentences, tmp_path / "teacher", layers=3)
    spec = cluster_spec(tmp_path, teacher, shared_data, maltese_sentences)
    home = tmp_path / "home"  # the job's ~, where its defaults go
    home.mkdir()
    runtime_env = {"env_vars": {**ENV_VARS, "LRL_TRIAL_FN": "tests.search.fakes:real_trial_on_node", "HOME": str(home)}}
    started = time.time()
    with two_nodes(shared_temp=True) as env:
        job = submit(env, runtime_env, str(spec), module="tests.search.backend")
    print(f"cluster job took {time.time() - started:.0f} s")
    assert "4 trials finished, 0 failed" in job.stdout, job.stdout[-4000:]
    assert "succeeded" in job.stdout.lower()

    client, parents, children = child_runs(f"sqlite:///{home / '.lrl-compress' / 'mlflow' / 'mlflow.db'}", "cluster")
    assert len(parents) == 1 and parents[0].data.params["ray_address"] == "auto"
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert Path(parents[0].data.params["experiment_dir"]).is_relative_to(home / ".lrl-compress")
    results = []
    for run in children:
        local = client.download_artifacts(run.info.run_id, "trial.json", str(tmp_path / run.info.run_id))
        results.append(json.loads(Path(local).read_text()))
    assert len({r["node_id"] for r in results}) == 2, "trials should have run on both nodes"
    assert all(Path(r["model_dir"]).is_relative_to(home / ".lrl-compress" / ".cache" / "stages") for r in results)
    # every stage output, shared or not, was built by exactly one trial; the others found it cached
    keys = {key for r in results for key in r["stage_keys"].values()}
    built = [key for r in results for stage, key in r["stage_keys"].items() if stage not in r["cached"]]
    assert sorted(built) == sorted(keys), f"stages built more than once: {built}"
    shared = [key for key in keys if sum(key in r["stage_keys"].values() for r in results) > 1]
    assert shared, "the space shares at least the distillation"


@pytest.mark.cluster
def test_readme_recipe_on_the_demo_spec(tmp_path):
    """``ray job submit --working-dir . -- python -m search.run specs/demo.yaml --address auto`` on two nodes
    in one temp folder: the driver prepares the demo's teacher after the node check and the trials finish.
    The synthetic language is the checkout's (built once, as tests/search/test_demo.py uses it)."""
    home = tmp_path / "home"
    home.mkdir()
    runtime_env = {"env_vars": {**ENV_VARS, "HOME": str(home),
                                "LRL_SYNTHETIC_ROOT": str(REPO / ".cache" / "synthetic")}}
    small = ["search.num_samples=2", "space.layers=[2]", "space.hidden=[64]", "space.ffn=[256, 512]",
             "space.vocab=[full]", "distill.steps=8", "truncate.distill.steps=8", "export=null",
             *(f"evaluation.{task}.epochs=1" for task in ("sentiment", "topic", "ner", "pos"))]
    started = time.time()
    with two_nodes(shared_temp=True) as env:
        job = submit(env, runtime_env, "specs/demo.yaml", *(arg for item in small for arg in ("--set", item)),
                     timeout=1200)
    print(f"demo job took {time.time() - started:.0f} s")
    assert "FileNotFoundError" not in job.stdout and "Traceback" not in job.stdout, job.stdout[-4000:]
    assert "2 trials finished, 0 failed" in job.stdout, job.stdout[-4000:]
    assert "succeeded" in job.stdout.lower()


@pytest.mark.cluster
def test_an_unshared_cache_folder_is_refused_in_one_line(tmp_path, shared_data, maltese_sentences):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1): the worker node runs in a private mount namespace with a tmpfs "
                    "over the cache folder")
    teacher = build_tiny_model("xlmr", maltese_sentences, tmp_path / "teacher", layers=3)
    spec = cluster_spec(tmp_path, teacher, shared_data, maltese_sentences)
    home = tmp_path / "home"
    home.mkdir()
    private = tmp_path / "private"  # the worker node sees an empty tmpfs here
    (private / "stages").mkdir(parents=True)
    runtime_env = {"env_vars": {**ENV_VARS, "LRL_TRIAL_FN": "tests.search.fakes:real_trial_on_node", "HOME": str(home)}}
    with two_nodes(shared_temp=False, private=private) as env:
        job = submit(env, runtime_env, str(spec), "--set", f"search.cache_dir={private / 'stages'}", timeout=300,
                     module="tests.search.backend")
    # (ray job submit shows a failed job's log twice)
    errors = sorted({line for line in job.stdout.splitlines() if line.startswith("error: ")})
    assert len(errors) == 1, job.stdout[-4000:]
    assert f"search.cache_dir ({private / 'stages'}): not the driver's folder on node" in errors[0]
    assert "--set search.cache_dir=/shared/lrl/stages" in errors[0] and "Traceback" not in job.stdout
    assert "failed" in job.stdout.lower() and not re.search(r"search.tuner: trial \S+ .* started", job.stdout)
    assert not list((private / "stages").iterdir()), "no stage was built"
