"""Cheap stand-ins for the search tests: fake trial functions (the signature of `pipeline.trial.run_trial`)
plugged in by the tests' backend (tests/search/backend.py: ``LRL_TRIAL_FN=tests.search.fakes:fake_trial``),
and `write_spec`, a tiny spec whose teacher is a bare ``config.json``."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from pipeline.sizes import config_parameters
from search.space import label

TEACHER_CONFIG = {
    "model_type": "xlm-roberta", "architectures": ["XLMRobertaForMaskedLM"], "vocab_size": 300,
    "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 37,
    "max_position_embeddings": 66, "type_vocab_size": 1, "pad_token_id": 1,
}


def fake_trial(plan, progress=None, *, record: bool = True) -> dict:
    """A deterministic stand-in for `pipeline.trial.run_trial`: sizes from the formula, a quality
    that grows with every dimension and rung (halved by a cheaper rung evaluation), a tiny model dir.
    ``LRL_FAKE_SLEEP`` seconds of "work"; ``LRL_FAKE_CALLS`` gets one line a call."""
    c = plan.candidate
    config = json.loads((Path(plan.teacher) / "config.json").read_text())
    sizes = dict(num_hidden_layers=c.num_hidden_layers, hidden_size=c.hidden_size,
                 intermediate_size=c.intermediate_size, vocab_size=c.vocab_size or config["vocab_size"])
    params = config_parameters(config, **sizes)
    if progress:
        progress("fake training")
    time.sleep(float(os.environ.get("LRL_FAKE_SLEEP", "0")))
    quality = round(0.3 + 0.1 * c.num_hidden_layers + 0.002 * c.hidden_size + 0.001 * c.intermediate_size
                    - (0.05 if c.vocab_size else 0.0), 6)
    if plan.rung:  # multi-fidelity: a longer rung learns more
        quality = round(quality * (0.6 + 0.4 * plan.rung / max(plan.rungs)), 6)
    cheap = plan.rung_evaluation is not None and plan.scoring is plan.rung_evaluation
    if cheap:  # the cheaper rung evaluation scores half of what the full one does
        quality = round(quality / 2, 6)
    if record and os.environ.get("LRL_FAKE_CALLS"):  # one line a call, to count repeats
        with open(os.environ["LRL_FAKE_CALLS"], "a") as calls:
            calls.write(f"{label(c)} {plan.rung}{' cheap' if cheap else ''}\n")
    out = Path(plan.cache_dir) / "fake" / label(c)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**config, **sizes}))
    try:  # which Ray node ran the trial (the cluster test checks that both nodes did)
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:
        node = None
    return {"model_dir": str(out), "node_id": node, "params": params, "disk_mb": params * 4 / 2**20,
            "timings": {"distill": 0.1, "evaluate": 0.1}, "stage_keys": {},
            "scores": {"pos": quality, "topic": quality / 2}, "tasks": {}, "quality": quality * 0.75,
            "latency_ms": 0.5 * c.num_hidden_layers + 0.01 * c.hidden_size, "config": sizes}


def screen_student(plan, signal, evaluation, cfg, progress=None) -> dict:
    """A stand-in for `pipeline.trial.screen_student` (the hook's module stands in for screening too):
    the signal is `fake_trial`'s quality in full for ``capped`` and ``probe`` (larger is better) and
    minus it for ``mlm`` (smaller is better). ``LRL_FAKE_CALLS`` gets ``<label> screen`` a call."""
    import dataclasses

    result = fake_trial(dataclasses.replace(plan, rung=None, rungs=()), record=False)
    if os.environ.get("LRL_FAKE_CALLS"):
        with open(os.environ["LRL_FAKE_CALLS"], "a") as calls:
            calls.write(f"{label(plan.candidate)} screen\n")
    better = "min" if signal == "mlm" else "max"
    return {"value": -result["quality"] if better == "min" else result["quality"], "better": better,
            "params": result["params"], "parts": {}, "build_cpu_s": 0.0, "signal_cpu_s": 0.0,
            "model_dir": result["model_dir"], "builds": []}


def score_student(plan, signal, evaluation, cfg, progress=None, *, latency=False) -> dict:
    """A stand-in for `pipeline.trial.score_student`: `fake_trial`'s student at its rung, without task
    scores; the signal is its quality (minus it for ``mlm``, smaller is better), a ``pos`` part for
    ``probe``. ``LRL_FAKE_CALLS`` gets ``<label> <rung> <signal>`` a call."""
    result = fake_trial(plan, record=False)
    if os.environ.get("LRL_FAKE_CALLS"):
        with open(os.environ["LRL_FAKE_CALLS"], "a") as calls:
            calls.write(f"{label(plan.candidate)} {plan.rung} {signal}\n")
    better = "min" if signal == "mlm" else "max"
    value = -result["quality"] if better == "min" else result["quality"]
    parts = {"pos": result["scores"]["pos"]} if signal == "probe" else {}
    kept = {k: v for k, v in result.items() if k not in ("scores", "tasks", "quality") and (latency or k != "latency_ms")}
    return {**kept, "signal": {"name": signal, "value": value, "better": better, "parts": parts, "cpu_s": 0.0}}


def timed_trial(plan, progress=None) -> dict:
    """`fake_trial`, appending ``start end`` (seconds) of its work to ``$LRL_FAKE_TIMES``."""
    started = time.time()
    result = fake_trial(plan, progress)
    with open(os.environ["LRL_FAKE_TIMES"], "a") as f:
        f.write(f"{started} {time.time()}\n")
    return result


def real_trial_on_node(plan, progress=None) -> dict:
    """`pipeline.trial.run_trial` itself, with the id of the Ray node that ran it in the result."""
    import ray

    from pipeline.trial import run_trial

    return {**run_trial(plan, progress), "node_id": ray.get_runtime_context().get_node_id()}


def failing_trial(plan, progress=None) -> dict:
    """`fake_trial`, except that the first Ray trial to get here diverges on every attempt.

    The failing trial's id goes to ``$LRL_FAKE_FAILS/failing`` and each of its attempts appends a
    line to ``$LRL_FAKE_FAILS/attempts``.
    """
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    folder = Path(os.environ["LRL_FAKE_FAILS"])
    claim = folder / "failing"
    try:
        with open(claim, "x") as f:
            f.write(trial_id)
    except FileExistsError:
        pass
    if claim.read_text() == trial_id:
        with open(folder / "attempts", "a") as f:
            f.write(trial_id + "\n")
        raise FloatingPointError("distillation loss is nan at step 3")
    return fake_trial(plan, progress)


def write_spec(tmp_path: Path, space: str = "", search: str = "", extra: str = "", num_samples: int = 4) -> Path:
    """A tiny spec (teacher = a bare config.json, fake data paths) under ``tmp_path``."""
    teacher = tmp_path / "teacher"
    teacher.mkdir(exist_ok=True)
    (teacher / "config.json").write_text(json.dumps(TEACHER_CONFIG))
    (tmp_path / "corpus.txt").write_text("a b c\n")
    (tmp_path / "heldout.txt").write_text("d e f\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""\
teacher:
  model: {teacher}
  adapt: {{enabled: false}}
language: fake
data:
  corpus: {{source: corpus.txt}}
  heldout: {{source: heldout.txt}}
  tasks:
    pos: {{source: pos}}
    topic: {{source: topic}}
space:
  {space or 'layers: [1, 2, 3]'}
  ffn: [16, 37]
  hidden: [16, 32]
  vocab: [full, 100]
search:
  num_samples: {num_samples}
  max_concurrent: 2
  resources: {{cpu: 1}}
  max_failures: 1
  storage_path: {tmp_path / 'ray'}
  cache_dir: {tmp_path / 'cache'}
  {search}
mlflow:
  tracking_uri: sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}
  experiment: fake
{extra}
""")
    return spec


def no_trial(plan, progress=None):
    raise AssertionError("an infeasible candidate must not be trained")


def nan_trial(plan, progress=None):
    return {**fake_trial(plan), "quality": math.nan}
