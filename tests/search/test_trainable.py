"""The trainable without Ray: sampled values -> candidate -> plan -> report, constraints, NaN.

Also home of the cheap fake trial functions that the search tests plug in through the testing hook
``LRL_TRIAL_FN=tests.search.test_trainable:fake_trial`` (same signature as `pipeline.trial.run_trial`),
and of `write_spec`, a tiny spec whose teacher is a bare ``config.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from pipeline.config import STAGES, Candidate, CorpusSource
from pipeline.sizes import config_parameters
from search.space import student_parameters
from search.trainable import (
    TrialContext, candidate_from_config, candidate_label, constraints_func,
    evaluate_candidate, search_space,
)

TEACHER_CONFIG = {
    "model_type": "xlm-roberta", "architectures": ["XLMRobertaForMaskedLM"], "vocab_size": 300,
    "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 37,
    "max_position_embeddings": 66, "type_vocab_size": 1, "pad_token_id": 1,
}


# ---------------------------------------------------------------------------- fakes (testing hook)
def fake_trial(plan, progress=None) -> dict:
    """A deterministic stand-in for `pipeline.trial.run_trial`: sizes from the formula, a quality
    that grows with every dimension, a tiny model dir. ``LRL_FAKE_SLEEP`` seconds of "work"."""
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
    out = Path(plan.cache_dir) / "fake" / candidate_label(c)
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
            "config": sizes}


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
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""\
teacher:
  model: {teacher}
  adapt: {{enabled: false}}
language: fake
data:
  corpus: {{source: corpus.txt}}
  heldout: {{source: corpus.txt}}
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


# ---------------------------------------------------------------------------- tests
def context(tmp_path, **kwargs) -> TrialContext:
    teacher = tmp_path / "teacher"
    teacher.mkdir(exist_ok=True)
    (teacher / "config.json").write_text(json.dumps(TEACHER_CONFIG))
    plan = {"teacher": str(teacher), "cache_dir": str(tmp_path / "cache"), "order": STAGES,
            "corpus": CorpusSource("corpus.txt"), "heldout": CorpusSource("corpus.txt")}
    base = dict(plan=plan,
                teacher_config=TEACHER_CONFIG, objectives=(("quality", "max"), ("params", "min")),
                trial_fn="tests.search.test_trainable:fake_trial")
    return TrialContext(**{**base, **kwargs})


def test_candidate_from_sampled_values():
    c = candidate_from_config({"layers": 2, "ffn": 16, "hidden": 32, "vocab": "full", "init": "last_k"})
    assert c == Candidate(num_hidden_layers=2, intermediate_size=16, hidden_size=32, vocab_size=None, init="last_k")
    assert candidate_from_config({"layers": 2, "ffn": 16, "hidden": 32, "vocab": 100}).vocab_size == 100
    assert candidate_label(c) == "L2-F16-H32-Vfull-last_k"


def test_search_space_is_categorical_with_full_vocab():
    class Space:
        layers, ffn, hidden, vocab, init = (2, 4), (16,), (16, 32), ("full", 100), ("stride",)

    space = search_space(Space)
    assert set(space) == {"layers", "ffn", "hidden", "vocab", "init"}
    assert space["vocab"].choices == ("full", 100)


def test_report_has_every_objective(tmp_path):
    ctx = context(tmp_path, objectives=(("quality", "max"), ("params", "min"), ("pos", "max")))
    c = Candidate(2, 16, 32, None)
    report = evaluate_candidate(ctx, c)
    assert report["params"] == student_parameters(TEACHER_CONFIG, c)
    assert {"quality", "params", "pos", "topic", "disk_mb"} <= set(report)
    assert report["feasible"] == 1
    assert json.loads(report["result_json"])["model_dir"].endswith("L2-F16-H32-Vfull-stride")


def test_max_params_candidate_is_not_trained(tmp_path):
    small, big = Candidate(1, 16, 16, 100), Candidate(3, 37, 32, None)
    limit = student_parameters(TEACHER_CONFIG, small) + 1
    ctx = context(tmp_path, max_params=limit, trial_fn="tests.search.test_trainable:no_trial")
    report = evaluate_candidate(ctx, big)
    assert report["feasible"] == 0 and report["params"] == student_parameters(TEACHER_CONFIG, big)
    assert report["quality"] < -1e9
    func = constraints_func(ctx)

    class Trial:
        params = {"layers": 3, "ffn": 37, "hidden": 32, "vocab": "full", "init": "stride"}

    assert func(Trial)[0] > 0
    Trial.params = {"layers": 1, "ffn": 16, "hidden": 16, "vocab": 100, "init": "stride"}
    assert func(Trial)[0] <= 0
    assert constraints_func(context(tmp_path)) is None


def no_trial(plan, progress=None):
    raise AssertionError("an infeasible candidate must not be trained")


def nan_trial(plan, progress=None):
    return {**fake_trial(plan), "quality": math.nan}


def test_nan_objective_fails_the_trial(tmp_path):
    ctx = context(tmp_path, trial_fn="tests.search.test_trainable:nan_trial")
    with pytest.raises(FloatingPointError, match="quality is nan"):
        evaluate_candidate(ctx, Candidate(2, 16, 32, None))


def test_min_quality_marks_infeasible(tmp_path):
    report = evaluate_candidate(context(tmp_path, min_quality=0.99), Candidate(2, 16, 32, None))
    assert report["feasible"] == 0 and math.isfinite(report["quality"])


def test_run_one_without_ray(tmp_path, monkeypatch):
    from search.spec import load_spec
    from search.trainable import run_one

    monkeypatch.setenv("LRL_TRIAL_FN", "tests.search.test_trainable:fake_trial")
    spec = load_spec(write_spec(tmp_path))
    report = run_one(spec, Candidate(2, 16, 32, 100))
    assert report["feasible"] == 1 and report["params"] == student_parameters(TEACHER_CONFIG, Candidate(2, 16, 32, 100))
    assert json.loads(report["result_json"])["node_id"] is None


@pytest.mark.parametrize("kind", ["nsga2", "tpe"])
def test_distinct_sampler_tries_every_candidate_before_repeating(kind):
    import pickle

    import optuna

    from search.trainable import DistinctSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class Space:
        layers, ffn, hidden, vocab, init = (1, 2), (16, 37), (16, 32), ("full",), ("stride",)

    space = search_space(Space)
    inner = (optuna.samplers.NSGAIISampler(seed=0, population_size=2) if kind == "nsga2"
             else optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    sampler = pickle.loads(pickle.dumps(DistinctSampler(inner, space, seed=0)))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    drawn = []
    for _ in range(9):
        trial = study.ask(fixed_distributions=space)
        drawn.append(tuple(trial.params[n] for n in space))
        study.tell(trial, [trial.params["layers"] * 0.1, trial.params["hidden"]])
    assert len(set(drawn[:8])) == 8  # 2 x 2 x 2 candidates, none twice
    assert drawn[8] in drawn[:8]
