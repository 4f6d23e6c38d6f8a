"""The trial recipe: stage order, identity skips, cached prefixes, trim-first teachers, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.__main__ import main as cli
from pipeline.config import AdaptConfig, Candidate, CorpusSource, DistillConfig, PruneConfig, TruncateConfig
from pipeline.errors import UsageError
from pipeline.plan import TrialPlan, plan_from_dict
from pipeline.trial import prepare_teacher, run_trial
from tests.pipeline.helpers import assert_hf_dir

FAST = DistillConfig(steps=3, batch_size=8, max_length=32, eval_every=10, bf16=False)


@pytest.fixture()
def plan_for(tiny_xlmr, shared_data, tmp_path):
    raw = shared_data / "mt" / "raw" / "test.parsemetsv"

    def make(candidate: Candidate, order=("distill", "prune", "truncate", "trim_vocab"), teacher=tiny_xlmr) -> TrialPlan:
        return TrialPlan(
            teacher=str(teacher), candidate=candidate, order=order,
            corpus=CorpusSource(source=str(raw), max_lines=300),
            heldout=CorpusSource(source=str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn"), max_lines=40),
            distill=FAST, prune=PruneConfig(batch_size=8, max_length=32, max_batches=2),
            truncate=TruncateConfig(distill=FAST), tasks={}, cache_dir=str(tmp_path / "cache"),
        )

    return make


def test_paper_order_and_reuse(plan_for):
    messages = []
    plan = plan_for(Candidate(num_hidden_layers=2, intermediate_size=20, hidden_size=16, vocab_size=150))
    result = run_trial(plan, progress=messages.append)
    assert result["config"] == {"num_hidden_layers": 2, "hidden_size": 16, "intermediate_size": 20, "vocab_size": 150}
    assert list(result["stage_keys"]) == ["distill", "prune", "truncate", "trim_vocab"]
    assert result["stages"]["distill"]["steps"] == 3 and result["stages"]["truncate"]["steps"] == 3
    assert result["cached"] == [] and result["scores"] == {} and "quality" not in result
    assert set(result["timings"]) == {"distill", "prune", "truncate", "trim_vocab", "evaluate", "latency"}
    assert result["params"] == assert_hf_dir(result["model_dir"]).num_parameters()
    assert result["disk_mb"] > 0
    json.dumps(result)
    # a sibling candidate shares the distilled and pruned prefix
    sibling = run_trial(plan_for(Candidate(num_hidden_layers=2, intermediate_size=20, hidden_size=8, vocab_size=150)))
    assert sibling["cached"] == ["distill", "prune"]
    assert sibling["stage_keys"]["prune"] == result["stage_keys"]["prune"]
    assert sibling["stage_keys"]["truncate"] != result["stage_keys"]["truncate"]
    assert run_trial(plan)["cached"] == ["distill", "prune", "truncate", "trim_vocab"]


def test_trim_first_distils_from_trimmed_teacher(plan_for):
    plan = plan_for(Candidate(num_hidden_layers=2, intermediate_size=37, hidden_size=32, vocab_size=120),
                    order=("trim_vocab", "distill", "prune", "truncate"))
    messages = []
    result = run_trial(plan, progress=messages.append)
    assert list(result["stage_keys"]) == ["trim_vocab", "distill"]  # prune and truncate are identities
    assert any("prune: identity" in message for message in messages)
    model = assert_hf_dir(result["model_dir"])
    assert model.config.vocab_size == 120 and model.config.num_hidden_layers == 2


def test_identity_candidate_returns_teacher(plan_for, tiny_xlmr):
    result = run_trial(plan_for(Candidate(num_hidden_layers=4, intermediate_size=37, hidden_size=32)))
    assert result["model_dir"] == str(tiny_xlmr) and result["stage_keys"] == {}


def test_impossible_candidates(plan_for):
    with pytest.raises(UsageError, match="num_hidden_layers: 6 is larger than the teacher's num_hidden_layers=4"):
        run_trial(plan_for(Candidate(num_hidden_layers=6, intermediate_size=37, hidden_size=32)))
    with pytest.raises(UsageError, match="not divisible by num_attention_heads=4"):
        run_trial(plan_for(Candidate(num_hidden_layers=2, intermediate_size=37, hidden_size=18)))
    with pytest.raises(UsageError, match="permutation"):
        run_trial(plan_for(Candidate(num_hidden_layers=2, intermediate_size=37, hidden_size=32), order=("distill",)))


def test_prepare_teacher_caches(tiny_bert, shared_data, tmp_path):
    corpus = CorpusSource(source=str(shared_data / "mt" / "raw" / "test.parsemetsv"), max_lines=100)
    heldout = CorpusSource(source=str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn"), max_lines=16)
    cfg = AdaptConfig(steps=2, batch_size=8, max_length=32, bf16=False)
    first = prepare_teacher(str(tiny_bert), cfg, corpus, heldout, str(tmp_path))
    assert prepare_teacher(str(tiny_bert), cfg, corpus, heldout, str(tmp_path)) == first
    assert json.loads((Path(first) / "metrics.json").read_text())["steps"] == 2
    assert prepare_teacher(str(tiny_bert), AdaptConfig(enabled=False), corpus, heldout, str(tmp_path)) == str(tiny_bert)


def test_trial_cli_with_json_plan(tiny_bert, shared_data, tmp_path):
    plan = {
        "teacher": str(tiny_bert),
        "candidate": {"num_hidden_layers": 2, "intermediate_size": 30, "hidden_size": 32, "init": "last_k"},
        "order": ["distill", "prune", "truncate", "trim_vocab"],
        "corpus": {"source": str(shared_data / "mt" / "raw" / "test.parsemetsv"), "max_lines": 100},
        "heldout": str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn"),
        "distill": {"steps": 2, "batch_size": 8, "max_length": 32},
        "prune": {"max_batches": 1, "max_length": 32},
        "cache_dir": str(tmp_path / "cache"),
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert cli(["trial", str(tmp_path / "plan.json"), "--out", str(tmp_path / "result.json")]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["config"]["intermediate_size"] == 30 and result["stages"]["distill"]["teacher_layers"] == [2, 3]
    (tmp_path / "bad.json").write_text(json.dumps({**plan, "distill": {"stepz": 2}}))
    assert cli(["trial", str(tmp_path / "bad.json")]) == 2
    with pytest.raises(UsageError, match=r"plan.distill: unknown key 'stepz'"):
        plan_from_dict({**plan, "distill": {"stepz": 2}})


def test_trial_with_a_task_and_teacher_reference(plan_for, shared_data, tmp_path):
    import dataclasses

    from pipeline.config import EvalConfig, TaskSource
    from pipeline.trial import teacher_reference

    base = EvalConfig(seeds=(1,))
    evaluation = dataclasses.replace(
        base, sentiment=dataclasses.replace(base.sentiment, epochs=1, max_train_examples=32, max_eval_examples=16)
    )
    tasks = {"sentiment": TaskSource(source=str(shared_data / "mt" / "sentiment"))}
    plan = dataclasses.replace(
        plan_for(Candidate(num_hidden_layers=2, intermediate_size=37, hidden_size=32)), tasks=tasks, evaluation=evaluation,
    )
    result = run_trial(plan)
    assert set(result["scores"]) == {"sentiment"} and result["quality"] == result["scores"]["sentiment"]
    detail = result["tasks"]["sentiment"]
    # selection on dev, test reported beside it
    assert result["scores"]["sentiment"] == detail["dev_mean"] == sum(detail["dev_scores"]) / len(detail["dev_scores"])
    assert result["test_scores"]["sentiment"] == detail["mean"] == result["test_quality"]
    assert result["tasks"]["sentiment"]["sizes"]["train"] == 32 and result["latency_ms"] > 0
    reference = teacher_reference(plan.teacher, tasks, evaluation, plan.cache_dir)
    assert reference["params"] > result["params"] and "quality" in reference
    assert teacher_reference(plan.teacher, tasks, evaluation, plan.cache_dir)["scores"] == reference["scores"]


def test_rungs_below_the_top_score_with_the_rung_evaluation(plan_for, shared_data):
    """Multi-fidelity's cheaper scoring: below the top rung the trial uses ``rung_evaluation`` (here
    one seed of two and 8 training examples of 24), at the top rung the full evaluation."""
    import dataclasses

    from pipeline.config import EvalConfig, TaskSource

    full = EvalConfig(seeds=(1, 2), sentiment=dataclasses.replace(EvalConfig().sentiment, epochs=1, max_train_examples=24,
                                                                 max_eval_examples=16))
    cheap = dataclasses.replace(full, seeds=(1,), sentiment=dataclasses.replace(full.sentiment, max_train_examples=8))
    base = plan_for(Candidate(num_hidden_layers=2, intermediate_size=37, hidden_size=32))
    plan = dataclasses.replace(base, tasks={"sentiment": TaskSource(source=str(shared_data / "mt" / "sentiment"))},
                               evaluation=full, rung_evaluation=cheap, rungs=(2, 6))
    low, top = run_trial(dataclasses.replace(plan, rung=2)), run_trial(dataclasses.replace(plan, rung=6))
    assert low["tasks"]["sentiment"]["seeds"] == [1] and low["tasks"]["sentiment"]["sizes"]["train"] == 8
    assert top["tasks"]["sentiment"]["seeds"] == [1, 2] and top["tasks"]["sentiment"]["sizes"]["train"] == 24
    # without multi-fidelity the rung evaluation is never used
    alone = dataclasses.replace(plan, rung=None, rungs=())
    assert alone.scoring is full and dataclasses.replace(plan, rung=2).scoring is cheap


@pytest.mark.parametrize(
    "order, second_teacher",
    [(("truncate", "trim_vocab", "prune", "distill"), "pruned"), (("prune", "trim_vocab", "truncate", "distill"), "original")],
)
def test_other_orders_reach_the_same_shape(order, second_teacher, plan_for):
    import dataclasses

    plan = plan_for(Candidate(num_hidden_layers=2, intermediate_size=20, hidden_size=16, vocab_size=150), order=order)
    plan = dataclasses.replace(plan, truncate=dataclasses.replace(plan.truncate, teacher=second_teacher))
    result = run_trial(plan)
    assert list(result["stage_keys"]) == list(order)
    assert result["config"] == {"num_hidden_layers": 2, "hidden_size": 16, "intermediate_size": 20, "vocab_size": 150}
    assert_hf_dir(result["model_dir"])


def test_a_higher_rung_continues_the_lower_one(plan_for, tmp_path):
    import dataclasses

    import torch

    from tests.pipeline.helpers import assert_hf_dir

    base = plan_for(Candidate(num_hidden_layers=2, intermediate_size=20, hidden_size=16, vocab_size=150))
    plan = dataclasses.replace(base, rungs=(2, 6), truncate=dataclasses.replace(base.truncate, distill=FAST))
    low = run_trial(dataclasses.replace(plan, rung=2))
    high = run_trial(dataclasses.replace(plan, rung=6))
    assert low["rung"] == 2 and high["rung"] == 6 and high["cached"] == ["distill", "prune"]
    assert low["stages"]["truncate"]["stop_at"] == 2 and high["stages"]["truncate"]["resumed_from"] == 2
    assert high["stages"]["truncate"]["steps"] == 6 and low["stage_keys"]["truncate"] != high["stage_keys"]["truncate"]
    assert low["stage_keys"]["trim_vocab"] != high["stage_keys"]["trim_vocab"]
    # the same rung trained straight through, in another cache, gives the same student
    straight = run_trial(dataclasses.replace(plan, rung=6, cache_dir=str(tmp_path / "other")))
    assert straight["stages"]["truncate"]["resumed_from"] == 0
    # the students compared are the best checkpoints: after the resume at 2, or resume is not tested
    assert high["stages"]["truncate"]["best_step"] == straight["stages"]["truncate"]["best_step"] > 2
    a, b = assert_hf_dir(high["model_dir"]), assert_hf_dir(straight["model_dir"])
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_damaged_cache_entries_are_rebuilt(plan_for, caplog):
    """A corrupt metrics.json or a truncated weight file in a complete entry: the trial rebuilds that
    stage (a warning names it) instead of failing on it."""
    plan = plan_for(Candidate(num_hidden_layers=2, intermediate_size=20, hidden_size=32))
    first = run_trial(plan)
    distilled = Path(plan.cache_dir) / first["stage_keys"]["distill"]
    pruned = Path(plan.cache_dir) / first["stage_keys"]["prune"]
    (distilled / "metrics.json").write_text('{"params": ')
    weights = pruned / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    again = run_trial(plan)
    assert again["cached"] == [] and again["stages"]["distill"]["steps"] == first["stages"]["distill"]["steps"]
    assert_hf_dir(again["model_dir"])
    warned = " ".join(r.message for r in caplog.records if "is damaged" in r.message)
    assert "metrics.json" in warned and "model.safetensors: truncated" in warned


def test_rung_zero_is_the_student_before_its_last_distillation(plan_for):
    """Rung 0: pruned, truncated and trimmed, not distilled again; a higher rung then trains from the start."""
    import dataclasses

    import torch

    from pipeline import modeling
    from pipeline.trial import build_student
    from pipeline.truncate import truncate_hidden

    base = plan_for(Candidate(num_hidden_layers=2, intermediate_size=20, hidden_size=16))
    plan = dataclasses.replace(base, rungs=(0, 2, 6))
    zero = build_student(dataclasses.replace(plan, rung=0))
    assert zero["rung"] == 0 and zero["stages"]["truncate"]["stop_at"] == 0
    assert [b["steps"] for b in zero["builds"]] == [3, 0, 0]
    pruned, tokenizer = modeling.load(Path(plan.cache_dir) / zero["stage_keys"]["prune"])
    expected, _ = truncate_hidden(pruned, tokenizer, 16, "first")
    student = assert_hf_dir(zero["model_dir"])
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(student.state_dict()[name], tensor, msg=name)
    two = build_student(dataclasses.replace(plan, rung=2))
    assert two["stages"]["truncate"]["resumed_from"] == 0 and two["stages"]["truncate"]["stop_at"] == 2


def test_a_build_keeps_its_cost_for_later_trials(plan_for):
    from pipeline.trial import build_student

    plan = plan_for(Candidate(num_hidden_layers=2, intermediate_size=20, hidden_size=16, vocab_size=150))
    first = build_student(plan)
    assert [b["built"] for b in first["builds"]] == [True] * 4
    assert all(b["build_cpu_s"] > 0 and b["build_wall_s"] > 0 for b in first["builds"])
    assert first["stages"]["distill"]["heldout_evals"] == 2  # at the start and at the last step (eval_every 10)
    assert first["stages"]["prune"]["batches"] == 2 and first["stages"]["prune"]["positions"] > 0
    again = build_student(plan)
    assert [b["built"] for b in again["builds"]] == [False] * 4
    assert [b["build_cpu_s"] for b in again["builds"]] == [b["build_cpu_s"] for b in first["builds"]]
    assert all(b["cpu_s"] < b["build_cpu_s"] for b in again["builds"])


def test_screening_scores_the_rung_zero_student(plan_for):
    """Screening builds the student at rung 0 of the last distillation (nothing distilled into its final
    shape) and takes the signal there: the held-out MLM loss of exactly that model."""
    import dataclasses

    from pipeline import modeling
    from pipeline.config import SignalConfig
    from pipeline.corpus import read_corpus
    from pipeline.signals import heldout_mlm_loss
    from pipeline.trial import build_student, screen_student

    plan = dataclasses.replace(plan_for(Candidate(num_hidden_layers=2, intermediate_size=20, hidden_size=16)),
                               rungs=(2, 6))
    cfg = SignalConfig(heldout_lines=20, batch_size=8, max_length=32)
    screened = screen_student(plan, "mlm", None, cfg)
    zero = build_student(dataclasses.replace(plan, rung=0, rungs=(0, 6)))
    assert zero["model_dir"] == screened["model_dir"] and len(zero["cached"]) == 3  # what screening built
    assert zero["stages"]["truncate"]["stop_at"] == 0 and screened["params"] == zero["params"]
    model, tokenizer = modeling.load(zero["model_dir"])
    assert screened["value"] == pytest.approx(heldout_mlm_loss(model, tokenizer, read_corpus(plan.heldout), cfg))
    assert screened["better"] == "min" and screened["build_cpu_s"] > 0
    with pytest.raises(UsageError, match="not 'distill'"):
        screen_student(plan, "distill", None, cfg)


def test_a_rung_ranked_by_a_signal_is_built_at_the_rung_and_not_evaluated(plan_for):
    """Multi-fidelity's signal (`score_student`): the student at the plan's rung, its signal taken on
    exactly that model, no task evaluated; latency only when asked."""
    import dataclasses

    from pipeline import modeling
    from pipeline.config import SignalConfig
    from pipeline.corpus import read_corpus
    from pipeline.signals import heldout_mlm_loss
    from pipeline.trial import score_student

    plan = dataclasses.replace(plan_for(Candidate(num_hidden_layers=2, intermediate_size=20, hidden_size=16)),
                               rungs=(0, 2, 6), rung=2)
    cfg = SignalConfig(heldout_lines=20, batch_size=8, max_length=32)
    scored = score_student(plan, "mlm", None, cfg, latency=True)
    assert scored["rung"] == 2 and scored["stages"]["truncate"]["stop_at"] == 2
    assert "scores" not in scored and "quality" not in scored and scored["latency_ms"] > 0
    model, tokenizer = modeling.load(scored["model_dir"])
    signal = scored["signal"]
    assert signal["value"] == pytest.approx(heldout_mlm_loss(model, tokenizer, read_corpus(plan.heldout), cfg))
    assert signal["name"] == "mlm" and signal["better"] == "min" and scored["cpu_s"]["signal"] == signal["cpu_s"] > 0
    assert "latency_ms" not in score_student(plan, "mlm", None, cfg)


def test_an_evaluation_of_more_seeds_trains_only_the_new_ones(shared_data, tiny_xlmr, tmp_path, monkeypatch):
    """A pilot's one seed is reused by the full evaluation, which trains the other seed alone; each seed
    scored by a larger evaluation serves a smaller one without training."""
    import dataclasses

    from pipeline import evaluate
    from pipeline.config import EvalConfig, TaskSource
    from pipeline.plan import input_key
    from pipeline.trial import evaluate_model

    calls = []
    real = evaluate.evaluate_task

    def recording(model_dir, task, source, cfg, **kwargs):
        calls.append(tuple(cfg.seeds))
        return real(model_dir, task, source, cfg, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_task", recording)
    base = EvalConfig(seeds=(1,))
    config = dataclasses.replace(base, pos=dataclasses.replace(base.pos, epochs=1, max_train_examples=48,
                                                               max_eval_examples=24))
    tasks = {"pos": TaskSource(str(shared_data / "mt" / "pos"))}
    model, key, cache = str(tiny_xlmr), input_key(str(tiny_xlmr)), str(tmp_path / "cache")
    pilot = evaluate_model(model, key, tasks, config, cache)
    full = evaluate_model(model, key, tasks, dataclasses.replace(config, seeds=(1, 2)), cache)
    assert calls == [(1,), (2,)]
    assert full["tasks"]["pos"]["scores"][0] == pilot["tasks"]["pos"]["scores"][0]
    alone = real(model, "pos", tasks["pos"], dataclasses.replace(config, seeds=(1, 2)))
    assert full["tasks"]["pos"]["scores"] == alone["scores"] and full["tasks"]["pos"]["examples"] == alone["examples"]
    evaluate_model(model, key, tasks, dataclasses.replace(config, seeds=(2,)), cache)
    more = evaluate_model(model, key, tasks, dataclasses.replace(config, seeds=(3, 1, 2)), cache)
    assert calls == [(1,), (2,), (3,)]  # seed 2 alone was cached by the evaluation of (1, 2)
    assert more["tasks"]["pos"]["seeds"] == [3, 1, 2] and more["tasks"]["pos"]["scores"][1:] == alone["scores"]


def test_a_damaged_seed_of_a_larger_evaluation_is_scored_again_alone(shared_data, tiny_xlmr, tmp_path, monkeypatch):
    import dataclasses
    import shutil

    from pipeline import evaluate
    from pipeline.cache import stage_key
    from pipeline.config import EvalConfig, TaskSource
    from pipeline.plan import input_key
    from pipeline.trial import evaluate_model

    base = EvalConfig(seeds=(1, 2))
    config = dataclasses.replace(base, pos=dataclasses.replace(base.pos, epochs=1, max_train_examples=48,
                                                               max_eval_examples=24))
    tasks = {"pos": TaskSource(str(shared_data / "mt" / "pos"))}
    model, key, cache = str(tiny_xlmr), input_key(str(tiny_xlmr)), tmp_path / "cache"
    first = evaluate_model(model, key, tasks, config, str(cache))

    def entry(seeds):
        return cache / stage_key(key, "evaluate", {"task": "pos", "source": tasks["pos"],
                                                    "evaluation": dataclasses.replace(config, seeds=seeds)})

    shutil.rmtree(entry((1, 2)))
    (entry((2,)) / "result.json").write_text("{", encoding="utf-8")  # a truncated write
    calls = []
    real = evaluate.evaluate_task
    monkeypatch.setattr(evaluate, "evaluate_task",
                        lambda *args, **kwargs: calls.append(tuple(args[3].seeds)) or real(*args, **kwargs))
    again = evaluate_model(model, key, tasks, config, str(cache))
    assert calls == [(2,)] and again["tasks"]["pos"]["scores"] == first["tasks"]["pos"]["scores"]
