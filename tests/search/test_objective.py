"""The objective without Ray: a candidate in, a result dict out; constraints, NaN, one trial alone."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.config import STAGES, Candidate, CorpusSource
from pipeline.plan import TrialPlan
from search.objective import PENALTY, TrialContext, evaluate_candidate
from search.space import student_parameters
from tests.search.fakes import TEACHER_CONFIG, write_spec


def context(tmp_path, **kwargs) -> TrialContext:
    teacher = tmp_path / "teacher"
    teacher.mkdir(exist_ok=True)
    (teacher / "config.json").write_text(json.dumps(TEACHER_CONFIG))
    plan = TrialPlan(teacher=str(teacher), candidate=None, order=STAGES, corpus=CorpusSource("corpus.txt"),
                     heldout=CorpusSource("corpus.txt"), cache_dir=str(tmp_path / "cache"))
    base = dict(plan=plan, teacher_config=TEACHER_CONFIG, objectives=(("quality", "max"), ("params", "min")),
                trial_fn="tests.search.fakes:fake_trial")
    return TrialContext(**{**base, **kwargs})


def test_result_has_every_objective(tmp_path):
    ctx = context(tmp_path, objectives=(("quality", "max"), ("params", "min"), ("pos", "max")))
    c = Candidate(2, 16, 32, None)
    outcome = evaluate_candidate(ctx, c)
    assert outcome["metrics"]["params"] == student_parameters(TEACHER_CONFIG, c)
    assert {"quality", "params", "pos", "topic", "disk_mb"} <= set(outcome["metrics"])
    assert outcome["feasible"] is True
    assert outcome["result"]["model_dir"].endswith("L2-F16-H32-Vfull-stride")


def test_max_params_candidate_is_not_trained(tmp_path):
    small, big = Candidate(1, 16, 16, 100), Candidate(3, 37, 32, None)
    limit = student_parameters(TEACHER_CONFIG, small) + 1
    ctx = context(tmp_path, max_params=limit, trial_fn="tests.search.fakes:no_trial")
    outcome = evaluate_candidate(ctx, big)
    assert outcome["feasible"] is False and outcome["metrics"]["params"] == student_parameters(TEACHER_CONFIG, big)
    assert outcome["metrics"]["quality"] == -PENALTY


def test_nan_objective_fails_the_trial(tmp_path):
    ctx = context(tmp_path, trial_fn="tests.search.fakes:nan_trial")
    with pytest.raises(FloatingPointError, match="quality is nan"):
        evaluate_candidate(ctx, Candidate(2, 16, 32, None))


def test_missing_objective_is_named(tmp_path):
    ctx = context(tmp_path, objectives=(("ner", "max"),))
    with pytest.raises(KeyError, match="no objective 'ner'"):
        evaluate_candidate(ctx, Candidate(2, 16, 32, None))


def test_min_quality_marks_infeasible(tmp_path):
    outcome = evaluate_candidate(context(tmp_path, min_quality=0.99), Candidate(2, 16, 32, None))
    assert outcome["feasible"] is False and math.isfinite(outcome["metrics"]["quality"])


def test_latency_is_an_objective_and_a_constraint(tmp_path):
    ctx = context(tmp_path, objectives=(("quality", "max"), ("latency_ms", "min")), max_latency_ms=1.5)
    fast, slow = (evaluate_candidate(ctx, Candidate(layers, 16, 32, None)) for layers in (1, 3))
    assert fast["metrics"]["latency_ms"] == pytest.approx(0.82) and fast["feasible"] is True
    assert slow["metrics"]["latency_ms"] == pytest.approx(1.82) and slow["feasible"] is False


def test_run_one_without_ray(tmp_path, monkeypatch):
    from search.prepare import run_one
    from search.spec import load_spec

    from tests.search.backend import use_fake_trials

    use_fake_trials("tests.search.fakes:fake_trial", monkeypatch.setattr)
    spec = load_spec(write_spec(tmp_path))
    outcome = run_one(spec, Candidate(2, 16, 32, 100))
    assert outcome["feasible"] and outcome["metrics"]["params"] == student_parameters(TEACHER_CONFIG, Candidate(2, 16, 32, 100))
    assert outcome["result"]["node_id"] is None


def test_a_rung_result_says_how_it_was_trained_and_scored(tmp_path):
    import dataclasses

    from pipeline.config import EvalConfig

    base = context(tmp_path, rungs=(10, 30, 90))
    cheap = context(tmp_path, rungs=(10, 30, 90), plan=dataclasses.replace(base.plan, rung_evaluation=EvalConfig(seeds=(1,))))
    c = Candidate(2, 16, 32, None)
    assert "fidelity" not in evaluate_candidate(base, c)["result"]  # no rung: trained in full
    assert evaluate_candidate(base, c, rung=30)["result"]["fidelity"] == {"rung": 30, "of": 90, "rescored": False,
                                                                        "scoring": "full"}
    assert evaluate_candidate(cheap, c, rung=30)["result"]["fidelity"]["scoring"] == "rung evaluation"
    assert evaluate_candidate(cheap, c, rung=90)["result"]["fidelity"]["scoring"] == "full"  # the top rung
    again = evaluate_candidate(cheap, c, rung=30, full_scoring=True)["result"]["fidelity"]
    assert again == {"rung": 30, "of": 90, "rescored": True, "scoring": "full"}


def test_a_rung_signal_scores_below_the_top_and_the_evaluation_at_it(tmp_path):
    """Below the top rung the signal stands in for every quality objective, larger is better (minus the
    MLM loss); the trial's own metrics hold no task score, so it cannot reach the front on a signal.
    The top rung and a rescoring evaluate in full."""
    import dataclasses

    from search.book import trial_metrics
    from tests.search.fakes import fake_trial

    objectives = (("quality", "max"), ("params", "min"), ("pos", "max"))
    ctx = context(tmp_path, rungs=(0, 10, 30), rung_signal="mlm", objectives=objectives)
    c = Candidate(2, 16, 32, None)
    full = fake_trial(dataclasses.replace(ctx.plan, candidate=c, rung=0, rungs=(0, 10, 30)), record=False)
    zero = evaluate_candidate(ctx, c, rung=0)
    assert zero["metrics"]["quality"] == zero["metrics"]["pos"] == full["quality"]  # minus the fake's "loss"
    assert zero["result"]["fidelity"] == {"rung": 0, "of": 30, "rescored": False, "scoring": "signal mlm"}
    assert "latency_ms" not in zero["result"]  # not an objective or a constraint: not measured
    flat = trial_metrics(zero["result"], None)
    assert "quality" not in flat and "pos" not in flat and flat["signal_mlm"] == -full["quality"]
    top = evaluate_candidate(ctx, c, rung=30)
    assert top["result"]["fidelity"]["scoring"] == "full" and "signal" not in top["result"]
    assert top["metrics"]["pos"] != top["metrics"]["quality"]  # real task scores
    rescored = evaluate_candidate(ctx, c, rung=10, full_scoring=True)["result"]
    assert rescored["fidelity"]["scoring"] == "full" and "scores" in rescored
    probe = dataclasses.replace(ctx, rung_signal="probe", max_latency_ms=100.0)
    ranked = evaluate_candidate(probe, c, rung=10)
    assert ranked["metrics"]["pos"] != ranked["metrics"]["quality"]  # a probe scores each task
    assert "latency_ms" in ranked["result"]  # a constraint: measured at every rung
