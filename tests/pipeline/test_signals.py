"""Cheap signals: each tells a trained model from a random one of its shape, and bad inputs fail clearly."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import modeling
from pipeline.config import AdaptConfig, EvalConfig, SignalConfig, TaskSource, TaskTraining
from pipeline.errors import UsageError
from pipeline.signals import SIGNALS, heldout_distill_loss, measure


@pytest.fixture(scope="module")
def trained_and_random(tiny_xlmr, maltese_sentences, tmp_path_factory):
    """The tiny XLM-R after 600 MLM steps on Maltese text, and the same shape untrained, as directories."""
    import torch

    from pipeline.adapt import adapt

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("signals")
    model, tokenizer = modeling.load(tiny_xlmr)
    random = folder / "random"
    modeling.save(model, tokenizer, random)
    cfg = AdaptConfig(steps=600, lr=3e-3, batch_size=32, max_length=32, warmup_steps=20, eval_every=1000, bf16=False,
                      pack=True)
    model, tokenizer, _ = adapt(model, tokenizer, maltese_sentences[:1800], maltese_sentences[1800:], cfg)
    trained = folder / "trained"
    modeling.save(model, tokenizer, trained)
    return str(trained), str(random)


def _tasks(shared_data):
    return {task: TaskSource(str(shared_data / "mt" / task)) for task in ("pos", "topic", "sentiment")}


CFG = SignalConfig(heldout_lines=200, max_length=32, probe_max_train=300)


@pytest.mark.parametrize("signal", ["mlm", "distill"])
def test_heldout_losses_are_lower_for_the_trained_model(signal, trained_and_random, maltese_sentences):
    trained, random = trained_and_random
    heldout = maltese_sentences[1800:]
    # distill: both are scored against the trained model as teacher, as a student is against its own
    values = [measure(signal, model, heldout=heldout, teacher_dir=trained, cfg=CFG) for model in (trained, random)]
    assert values[0]["value"] < values[1]["value"] - 0.5
    assert values[0]["better"] == SIGNALS[signal] == "min"
    assert values[0]["cpu_s"] > 0 and values[0]["wall_s"] > 0
    if signal == "distill":
        assert values[0]["parts"]["kd"] == 0.0  # a model against itself: no logit difference
        assert set(values[1]["parts"]) == {"mlm", "kd"}


def test_probe_scores_the_trained_model_higher(trained_and_random, shared_data):
    trained, random = trained_and_random
    tasks = {"pos": _tasks(shared_data)["pos"]}
    scores = [measure("probe", model, tasks=tasks, cfg=CFG) for model in (trained, random)]
    assert scores[0]["value"] > scores[1]["value"] + 0.02  # 0.379 against 0.345 here
    assert scores[0]["parts"]["pos"] == scores[0]["value"]


def test_capped_evaluation_scores_the_trained_model_higher(trained_and_random, shared_data):
    trained, random = trained_and_random
    training = TaskTraining(method="adapter", epochs=3, lr=3e-3, batch_size=16, max_length=64, reduction_factor=2,
                            max_train_examples=300)
    evaluation = EvalConfig(method="adapter", seeds=(1,), pos=training)
    tasks = {"pos": _tasks(shared_data)["pos"]}
    scores = [measure("capped", model, tasks=tasks, evaluation=evaluation) for model in (trained, random)]
    assert scores[0]["value"] > scores[1]["value"] + 0.03
    assert scores[0]["better"] == "max"


def test_the_same_rows_every_time(trained_and_random, maltese_sentences):
    trained, _ = trained_and_random
    first = measure("mlm", trained, heldout=maltese_sentences[1800:], cfg=CFG)["value"]
    assert measure("mlm", trained, heldout=maltese_sentences[1800:], cfg=CFG)["value"] == first
    other = measure("mlm", trained, heldout=maltese_sentences[1800:], cfg=dataclasses.replace(CFG, seed=5))["value"]
    assert other != first  # another masking seed masks other positions


def test_bad_inputs_name_the_problem(trained_and_random, maltese_sentences):
    trained, _ = trained_and_random
    with pytest.raises(UsageError, match="unknown signal 'loss'"):
        measure("loss", trained)
    with pytest.raises(UsageError, match="signal distill needs teacher_dir"):
        measure("distill", trained, heldout=maltese_sentences[:10])
    with pytest.raises(UsageError, match="signal capped needs tasks, evaluation"):
        measure("capped", trained)
    student, tokenizer = modeling.load(trained)
    teacher = modeling.fresh(student, vocab_size=student.config.vocab_size + 1)
    with pytest.raises(UsageError, match="student vocabulary 300 differs from the teacher's 301"):
        heldout_distill_loss(student, teacher, tokenizer, maltese_sentences[:10], None)


def test_command_line_prints_one_json_line(trained_and_random, maltese_sentences, tmp_path, capsys):
    import json

    from pipeline.__main__ import main

    trained, _ = trained_and_random
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("\n".join(maltese_sentences[1800:1900]), encoding="utf-8")
    assert main(["signal", "--model", trained, "--signal", "mlm", "--heldout", str(heldout)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["signal"] == "mlm" and result["value"] > 0
    assert main(["signal", "--model", trained, "--signal", "probe", "--task", "chunking=x"]) == 2
