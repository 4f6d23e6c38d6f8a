"""Kill and resume with the real pipeline: a tiny teacher built here, real Maltese text and POS data, a
few training steps, so that a trial takes seconds.

One search is killed three times, each at a point a real run meets, and resumed each time without the
``--set`` it started with: SIGKILL of the driver while it adapts the teacher, SIGKILL of the driver while
a trial distils, and the driver killed just after a trial finished but before its MLflow run is
complete (``LRL_CRASH_AT=trial-run-open``, tests/search/backend.py). The last resume must end with exactly
``num_samples`` finished trial runs, none repeated, none lost, the Pareto tags right and no leftovers
of the killed builds. A second search has a Ray worker SIGKILLed while it distils: the trial is retried
within ``search.max_failures`` and the search goes on.

The kill points are found from the outside, without hooks: a stage build in progress is a
``.<stage>-<key>.tmp-<pid>`` folder in the stage cache, and its name carries the builder's pid.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.pareto import pareto_front
from tests.conftest import build_tiny_model
from tests.search.test_driver import REPO, child_runs

NUM_SAMPLES = 4
OBJECTIVES = [("pos", "max"), ("params", "min")]
ENV = {"RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO),
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TRAIN = "batch_size: 8, max_length: 48, eval_every: 20, bf16: false"


def write_real_spec(folder: Path, teacher: Path, shared_data: Path, sentences: list[str], *, adapt_steps: int,
                    num_samples: int = 6) -> Path:
    """A spec of the real pipeline at toy scale: 2 layers, FFN 16 or 37, hidden 16 or 32, one POS seed."""
    (folder / "corpus.txt").write_text("\n".join(sentences[:400]) + "\n", encoding="utf-8")
    (folder / "heldout.txt").write_text("\n".join(sentences[400:440]) + "\n", encoding="utf-8")
    spec = folder / "spec.yaml"
    spec.write_text(f"""\
teacher:
  model: {teacher}
  adapt: {{enabled: {str(adapt_steps > 0).lower()}, steps: {max(adapt_steps, 1)}, {TRAIN}}}
language: mt
data:
  corpus: {{source: corpus.txt}}
  heldout: {{source: heldout.txt}}
  tasks:
    pos: {{source: {shared_data / 'mt' / 'pos'}}}
distill: {{steps: 40, {TRAIN}}}
truncate: {{distill: {{steps: 10, {TRAIN}}}}}
prune: {{batch_size: 8, max_length: 48, max_batches: 2}}
evaluation:
  seeds: [1]
  pos: {{epochs: 1, batch_size: 16, max_length: 48, max_train_examples: 32, max_eval_examples: 32}}
space: {{layers: [2], ffn: [16, 37], hidden: [16, 32], vocab: [full]}}
objectives: [{{metric: pos}}, {{metric: params}}]
search:
  num_samples: {num_samples}
  max_concurrent: 2
  resources: {{cpu: 1}}
  max_failures: 1
  seed: 1
  storage_path: {folder / 'ray'}
  cache_dir: {folder / 'cache'}
mlflow: {{tracking_uri: 'sqlite:///{folder / 'mlflow' / 'mlflow.db'}', experiment: kills}}
""")
    return spec


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, maltese_sentences) -> Path:
    return build_tiny_model("xlmr", maltese_sentences, tmp_path_factory.mktemp("kill-teacher"), layers=3)


class Driver:
    """``python -m search.run`` (through the tests' backend, for ``LRL_CRASH_AT``) in its own session, its
    output in a log file."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None):
        self.log = log
        self.out = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.search.backend", *args], cwd=REPO,
                                     env={**os.environ, **ENV, **(env or {})}, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, found, what: str, timeout: float = 300):
        """Poll ``found()`` until it returns something truthy; fail when the driver exits first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = found()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"the driver exited ({self.proc.returncode}) before {what}:\n{self.text()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout} s:\n{self.text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL the driver, then whatever its private Ray left in the session."""
        self.proc.send_signal(signal.SIGKILL)
        self.finish(30)

    def finish(self, timeout: float = 600) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            time.sleep(1)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.out.close()
        return code


def building(cache: Path, stage: str):
    """A ``(folder, pid)`` of a build of ``stage`` in progress in the stage cache, or None."""
    if not cache.is_dir():
        return None
    for path in cache.glob(f".{stage}-*.tmp-*"):
        return path, int(path.name.rsplit("-", 1)[1])
    return None


def trial_runs(folder: Path):
    return child_runs(f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}", "kills")


def assert_complete(folder: Path, num_samples: int) -> None:
    """Exactly ``num_samples`` finished trial runs, one per trial, Pareto tags equal to the front."""
    _, parents, children = trial_runs(folder)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    ids = [run.data.tags["lrl.trial_id"] for run in children]
    assert len(ids) == len(set(ids)) == num_samples, ids
    assert all(run.info.status == "FINISHED" for run in children)
    records = [{"id": run.data.tags["lrl.trial_id"], "metrics": run.data.metrics, "failed": False, "finished": True,
                "feasible": run.data.tags["feasible"] == "true"} for run in children]
    front = pareto_front(records, OBJECTIVES)
    assert front and {r.data.tags["lrl.trial_id"] for r in children if r.data.tags["pareto"] == "true"} == front
    assert all({"pos", "params", "num_hidden_layers"} <= set(run.data.metrics) | set(run.data.params) for run in children)
    leftovers = sorted(p.name for p in (folder / "cache").iterdir() if ".tmp-" in p.name)
    assert leftovers == [], "killed builds left folders behind"


@pytest.mark.slow
def test_driver_killed_three_times_then_resumed_without_its_set(tmp_path, teacher, shared_data, maltese_sentences):
    spec = write_real_spec(tmp_path, teacher, shared_data, maltese_sentences, adapt_steps=60)
    cache = tmp_path / "cache"
    started = time.time()

    # 1. the driver adapts the teacher: SIGKILL it mid-build; the spec file says 6 trials, --set says 4
    first = Driver(tmp_path / "1.log", str(spec), "--set", f"search.num_samples={NUM_SAMPLES}")
    _, pid = first.wait_for(lambda: building(cache, "adapt"), "the teacher's adaptation")
    assert pid == first.proc.pid  # the driver itself prepares the teacher
    first.kill()
    assert not list(cache.glob("adapt-*/.complete"))

    # 2. resumed without the --set (found by its stored spec); SIGKILL while a trial distils
    second = Driver(tmp_path / "2.log", str(spec), "--resume")
    _, pid = second.wait_for(lambda: building(cache, "distill"), "a trial's distillation", timeout=400)
    assert pid != second.proc.pid  # a Ray worker distils
    second.kill()
    assert "resuming kills-" in second.text() and "search.num_samples=4" in second.text()
    assert list(cache.glob("adapt-*/.complete")), "the adapted teacher is kept"
    _, _, children = trial_runs(tmp_path)
    assert len([r for r in children if r.info.status == "FINISHED"]) < NUM_SAMPLES

    # 3. resumed; killed by the hook just after a trial finished, before its run is complete
    third = Driver(tmp_path / "3.log", str(spec), "--resume", env={"LRL_CRASH_AT": "trial-run-open"})
    code = third.finish(timeout=600)
    assert code == -signal.SIGKILL, third.text()[-3000:]
    _, _, children = trial_runs(tmp_path)
    half = [r for r in children if r.info.status == "RUNNING"]
    assert len(half) == 1 and "pos" in half[0].data.metrics, "one trial run left half-written"

    # 4. resumed to the end
    fourth = Driver(tmp_path / "4.log", str(spec), "--resume")
    code = fourth.finish(timeout=600)
    assert code == 0, fourth.text()[-4000:]
    assert f"{NUM_SAMPLES} trials finished, 0 failed" in fourth.text()
    assert_complete(tmp_path, NUM_SAMPLES)
    _, _, children = trial_runs(tmp_path)
    assert half[0].info.run_id in {r.info.run_id for r in children}, "the half-written run was completed in place"
    assert len(list((tmp_path / "ray").iterdir())) == 1, "every resume continued the same Ray experiment"
    print(f"three kills and resumes: {time.time() - started:.0f} s")


@pytest.mark.slow
def test_ray_worker_killed_mid_trial_is_retried(tmp_path, teacher, shared_data, maltese_sentences):
    spec = write_real_spec(tmp_path, teacher, shared_data, maltese_sentences, adapt_steps=0, num_samples=3)
    cache = tmp_path / "cache"
    driver = Driver(tmp_path / "run.log", str(spec))
    _, pid = driver.wait_for(lambda: building(cache, "distill"), "a trial's distillation", timeout=400)
    assert pid != driver.proc.pid
    os.kill(pid, signal.SIGKILL)  # the Ray worker that runs the trial
    code = driver.finish(timeout=600)
    assert code == 0, driver.text()[-4000:]
    assert re.search(r"failed \(attempt 1 of 2\), retrying", driver.text()), driver.text()[-4000:]
    assert "3 trials finished, 0 failed" in driver.text()
    assert_complete(tmp_path, 3)
