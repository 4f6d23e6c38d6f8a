"""`evaluate` end to end on every real dataset with tiny models, the command line, and bad data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.__main__ import main as cli
from pipeline.config import EvalConfig, TaskSource, TaskTraining
from pipeline.evaluate import evaluate_task


REAL = {"pos": "mt/pos", "topic": "mt/topic", "sentiment": "mt/sentiment", "ner": "sw/ner"}


def quick(task: str, **changes) -> EvalConfig:
    """One seed, one epoch, the first 48 train and 24 dev/test examples."""
    base = EvalConfig(seeds=(1,))
    training = dataclasses.replace(getattr(base, task), epochs=1, max_train_examples=48, max_eval_examples=24)
    return dataclasses.replace(base, **{task: training}, **changes)


@pytest.mark.parametrize("task", sorted(REAL))
def test_evaluate_real_data(task, shared_data, tiny_xlmr):
    progress = []
    result = evaluate_task(str(tiny_xlmr), task, TaskSource(str(shared_data / REAL[task])), quick(task),
                           progress=progress.append)
    assert result["task"] == task
    assert result["sizes"] == {"train": 48, "dev": 24, "test": 24}
    assert len(result["scores"]) == 1 and 0.0 <= result["mean"] <= 1.0 and result["std"] == 0.0
    assert result["metric"] == {"pos": "accuracy", "ner": "entity_f1"}.get(task, "macro_f1")
    assert any("epoch 1/1" in line for line in progress)


def test_a_long_epoch_logs_where_it_is(shared_data, tiny_xlmr, monkeypatch):
    from pipeline import evaluate

    monkeypatch.setattr(evaluate, "_QUIET_SECONDS", 0.0)  # every batch is "long after the last line"
    progress = []
    cfg = quick("topic")
    cfg = dataclasses.replace(cfg, topic=dataclasses.replace(cfg.topic, batch_size=16))
    evaluate_task(str(tiny_xlmr), "topic", TaskSource(str(shared_data / "mt" / "topic")), cfg, progress=progress.append)
    within = [line.split(": ")[1].split(",")[0] for line in progress if ": batch " in line]
    assert within == ["batch 1/3", "batch 2/3", "batch 3/3"]


def test_evaluate_bert_subword_scoring_and_finetune(shared_data, tiny_bert):
    result = evaluate_task(str(tiny_bert), "pos", TaskSource(str(shared_data / "mt" / "pos")),
                           quick("pos", scoring="subword", method="finetune"))
    assert result["metric"] == "chunk_f1" and result["method"] == "finetune"


def test_a_task_may_use_its_own_method(shared_data, tiny_xlmr):
    cfg = quick("topic", method="adapter")
    cfg = dataclasses.replace(cfg, topic=dataclasses.replace(cfg.topic, method="finetune"))
    result = evaluate_task(str(tiny_xlmr), "topic", TaskSource(str(shared_data / "mt" / "topic")), cfg)
    assert result["method"] == "finetune" and result["dev_mean"] == result["dev_scores"][0]


def test_seeds_repeat_and_differ(shared_data, tiny_xlmr):
    source = TaskSource(str(shared_data / "mt" / "sentiment"))
    cfg = quick("sentiment", seeds=(1, 2))
    cfg = dataclasses.replace(cfg, sentiment=dataclasses.replace(cfg.sentiment, epochs=2))
    first = evaluate_task(str(tiny_xlmr), "sentiment", source, cfg)
    again = evaluate_task(str(tiny_xlmr), "sentiment", source, cfg)
    assert first["scores"] == again["scores"] and first["dev_scores"] == again["dev_scores"]
    assert len(first["scores"]) == 2
    assert first["std"] == pytest.approx(abs(first["scores"][0] - first["scores"][1]) / 2)


def test_best_dev_epoch_is_recorded(shared_data, tiny_xlmr):
    cfg = EvalConfig(seeds=(3,), ner=TaskTraining(lr=3e-3, epochs=3, batch_size=16, select="best_dev",
                                                  max_train_examples=32, max_eval_examples=16))
    result = evaluate_task(str(tiny_xlmr), "ner", TaskSource(str(shared_data / "sw" / "ner")), cfg)
    assert 1 <= result["epochs"][0] <= 3


def test_cli_prints_json_last_and_writes_metrics(shared_data, tiny_xlmr, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli(["evaluate", "--model", str(tiny_xlmr), "--task", "topic", "--data", str(shared_data / "mt" / "topic"),
                "--epochs", "1", "--seeds", "4", "--max-train-examples", "32", "--max-eval-examples", "16",
                "--text-column", "text", "--label-column", "category", "--out", str(out)])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"task", "metric", "mean", "std", "scores", "sizes"} <= set(last)
    assert last["seeds"] == [4] and last["sizes"]["train"] == 32
    assert json.loads((out / "metrics.json").read_text()) == last
    assert [p.name for p in out.iterdir()] == ["metrics.json"]


def test_cli_pooling_reaches_the_task_settings():
    import argparse

    from pipeline.evaluate import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    _, evaluation = config_from_args(parser.parse_args(["--model", "m", "--task", "topic", "--data", "d", "--pooling", "mean"]))
    assert evaluation.topic.pooling == "mean" and evaluation.sentiment.pooling == "first"
    _, default = config_from_args(parser.parse_args(["--model", "m", "--task", "topic", "--data", "d"]))
    assert default.topic.pooling == "first"


def test_cli_bad_file_one_line_exit_2(tmp_path, tiny_xlmr, capsys):
    (tmp_path / "train.txt").write_text("a B-PER\nb\n")
    (tmp_path / "dev.txt").write_text("a B-PER\n")
    (tmp_path / "test.txt").write_text("a B-PER\n")
    out = tmp_path / "out"
    code = cli(["evaluate", "--model", str(tiny_xlmr), "--task", "ner", "--data", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "train.txt:2" in err[0]
    assert not out.exists()


def test_cli_bad_options(tiny_xlmr, shared_data, capsys):
    args = ["evaluate", "--model", str(tiny_xlmr), "--task", "pos", "--data", str(shared_data / "mt" / "pos")]
    assert cli(args + ["--seeds", "1,x"]) == 2
    assert cli(args + ["--epochs", "0"]) == 2
    assert cli(["evaluate", "--model", "/nonexistent", "--task", "pos", "--data", "x"]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_a_hub_teacher_is_evaluated_through_the_same_checks(tiny_xlmr, tmp_path, monkeypatch):
    """A teacher given as a hub id (adaptation off) is evaluated as before: the folder checks apply to
    local folders, the tokenizer checks to both (here a hub id resolved from a local mirror)."""
    from pipeline import modeling

    real_config, real_tokenizer = modeling.load_config, modeling.load_tokenizer
    monkeypatch.setattr(modeling, "load_config", lambda name, **kw: real_config(tiny_xlmr if name == "org/tiny" else name))
    monkeypatch.setattr(modeling, "load_tokenizer",
                        lambda name, **kw: real_tokenizer(tiny_xlmr if name == "org/tiny" else name, **kw))
    from transformers import AutoModel

    real_from = AutoModel.from_pretrained
    monkeypatch.setattr(AutoModel, "from_pretrained",
                        lambda name, *a, **kw: real_from(str(tiny_xlmr) if name == "org/tiny" else name, *a, **kw))
    folder = tmp_path / "topic"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text("category\ttext\nsport\tIl-logħba\nhealth\tIt-tabib\n", encoding="utf-8")
    cfg = EvalConfig(seeds=(1,), topic=TaskTraining(epochs=1, max_train_examples=2, max_eval_examples=2))
    result = evaluate_task("org/tiny", "topic", TaskSource(str(folder)), cfg)
    assert 0 <= result["mean"] <= 1 and result["model"] == "org/tiny"


@pytest.mark.parametrize("task", ["pos", "topic"])
def test_one_trained_seed_scores_as_the_evaluation_does(task, shared_data, tiny_xlmr):
    """`train_task` is one seed of `evaluate_task`: the same model, so the same dev and test scores; a
    predictor of the same outputs (here the model's own forward, wrapped) scores the same again."""
    import torch

    from pipeline.evaluate import train_task

    source = TaskSource(str(shared_data / REAL[task]))
    cfg = quick(task, method="finetune", seeds=(2,))
    result = evaluate_task(str(tiny_xlmr), task, source, cfg)
    trained = train_task(str(tiny_xlmr), task, source, cfg, seed=2)
    assert trained.sizes() == result["sizes"] and trained.epoch == result["epochs"][0]
    assert trained.score("test") == result["scores"][0] and trained.score("dev") == result["dev_scores"][0]

    def wrapped(ids, mask):
        with torch.no_grad():
            return trained.model.head(trained.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state)

    assert trained.score("test", wrapped) == result["scores"][0]


def test_each_seed_scores_alone_and_seeds_combine_exactly(shared_data, tiny_xlmr):
    """A seed trains from its own seed only, so an evaluation of seeds (1, 2) is the evaluation of seed 1
    combined with that of seed 2, per-example counts included: what lets a cache keep seeds apart."""
    from pipeline.evaluate import combine_seeds, split_seeds

    source = TaskSource(str(shared_data / "mt" / "pos"))
    both = evaluate_task(str(tiny_xlmr), "pos", source, quick("pos", seeds=(1, 2)))
    second = evaluate_task(str(tiny_xlmr), "pos", source, quick("pos", seeds=(2,)))
    assert both["scores"][1] == second["scores"][0] and both["dev_scores"][1] == second["dev_scores"][0]
    assert both["examples"]["test"][1] == second["examples"]["test"][0]
    assert both["scores"][0] != both["scores"][1]  # the seeds do differ, so the equality above means something
    parts = split_seeds(both)
    assert [p["seeds"] for p in parts] == [[1], [2]] and parts[1]["scores"] == second["scores"]
    assert combine_seeds(parts) == both
    assert sum(both["seed_cpu_seconds"]) == pytest.approx(both["cpu_seconds"], abs=0.02)
    with pytest.raises(ValueError, match="repeat"):
        combine_seeds([parts[0], parts[0]])
    other = evaluate_task(str(tiny_xlmr), "pos", source, quick("pos", seeds=(2,), scoring="subword"))
    with pytest.raises(ValueError, match="metric, .*scoring"):
        combine_seeds([parts[0], other])
