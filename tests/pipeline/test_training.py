"""The shared training loop: its config from both stage configs, and progress lines without a terminal."""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest

from pipeline import modeling
from pipeline.config import AdaptConfig, DistillConfig
from pipeline.losses import mlm_loss
from pipeline.training import PROGRESS_LINES, TrainConfig, train_loop

LINE = re.compile(r"^test step (\d+)/(\d+): loss \d+\.\d{4}, \d+:\d\d:\d\d elapsed, about (\d+:\d\d:\d\d) left$")


def _mlm(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return mlm_loss(logits, batch["labels"]), {}


def test_of_distill_config_takes_every_loop_setting():
    stage = DistillConfig(steps=None, epochs=3.0, lr=1e-3, batch_size=4, grad_accum=2, max_length=64,
                          mlm_probability=0.2, weight_decay=0.01, warmup_steps=5, grad_clip=0.5, eval_every=7,
                          seed=9, bf16=False)
    cfg = TrainConfig.of(stage)
    assert dataclasses.asdict(cfg) == {field.name: getattr(stage, field.name, field.default)
                                       for field in dataclasses.fields(cfg)}
    assert cfg.heldout_rows == 256 and cfg.best_weights == "auto"


def test_of_adapt_config_keeps_adapts_loop_defaults():
    stage = AdaptConfig(steps=7, lr=1e-3, batch_size=4, max_length=64, mlm_probability=0.2, weight_decay=0.01,
                        warmup_steps=5, eval_every=3, seed=9, bf16=False)
    assert TrainConfig.of(stage) == TrainConfig(
        steps=7, epochs=1.0, lr=1e-3, batch_size=4, grad_accum=1, max_length=64, mlm_probability=0.2,
        weight_decay=0.01, warmup_steps=5, grad_clip=1.0, eval_every=3, seed=9, bf16=False,
    )


def test_steps_lr_and_batch_size_are_required():
    with pytest.raises(TypeError, match="batch_size"):
        TrainConfig(steps=1, lr=1e-3)


@pytest.mark.parametrize(
    ("steps", "lines"),
    [(40, list(range(2, 41, 2))), (7, list(range(1, 8))), (41, [3 * i for i in range(1, 14)] + [41])],
)
def test_progress_lines_every_5_percent(steps, lines, tiny_bert, maltese_sentences, caplog):
    model, tokenizer = modeling.load(tiny_bert)
    cfg = TrainConfig(steps=steps, lr=1e-3, batch_size=4, max_length=16, eval_every=1000, bf16=False)
    with caplog.at_level(logging.INFO, logger="pipeline.training"):
        train_loop(model, tokenizer, maltese_sentences[:40], maltese_sentences[-8:], _mlm, cfg, desc="test")
    messages = [record.getMessage() for record in caplog.records if record.getMessage().startswith("test step ")]
    progress = [LINE.match(message) for message in messages]
    assert all(progress), messages
    assert [int(match[1]) for match in progress] == lines and len(lines) <= PROGRESS_LINES
    assert {int(match[2]) for match in progress} == {steps}
    assert progress[-1][3] == "0:00:00"  # nothing left after the last step


def test_stopped_at_rungs_and_continued_equals_straight_through(tiny_xlmr, maltese_sentences, tmp_path):
    """Distillation stopped at rungs 3 and 6 of a 12-step run, each time saved and continued in a fresh
    model, ends with the weights of the run trained straight through (rungs are held-out checkpoints in both)."""
    import torch

    from pipeline.config import DistillConfig
    from pipeline.distill import distill, init_student
    from pipeline.training import Fidelity

    cfg = DistillConfig(steps=12, lr=3e-3, batch_size=8, max_length=32, eval_every=5, warmup_steps=2, bf16=False,
                        grad_accum=2)
    texts, heldout = maltese_sentences[:200], maltese_sentences[-24:]
    rungs = (3, 6, 12)

    def student():
        teacher, tokenizer = modeling.load(tiny_xlmr)
        return init_student(teacher, 2, "stride"), teacher, tokenizer

    model, teacher, tokenizer = student()
    straight, _, full = distill(model, teacher, tokenizer, texts, heldout, cfg, fidelity=Fidelity(12, rungs))
    state, previous, metrics = None, None, {}
    for rung in rungs:
        model, teacher, tokenizer = student()  # a new process would start from a fresh model as well
        save = str(tmp_path / f"state-{rung}.pt") if rung < 12 else None
        model, _, metrics = distill(model, teacher, tokenizer, texts, heldout, cfg,
                                    fidelity=Fidelity(rung, rungs, resume=state, save=save))
        assert metrics["stop_at"] == rung and metrics["resumed_from"] == (previous or 0)
        state, previous = save, rung
    # the weights compared are the best checkpoint's: it must come after the last resume, or the test
    # would pass with the continuation broken
    assert full["best_step"] > rungs[-2], full["best_step"]
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert metrics["best_step"] == full["best_step"] and metrics["tokens"] == full["tokens"]
    assert metrics["heldout_loss"] == pytest.approx(full["heldout_loss"], rel=1e-6)


def test_a_rung_past_the_run_is_refused(tiny_xlmr, maltese_sentences):
    from pipeline.errors import UsageError
    from pipeline.training import Fidelity

    model, tokenizer = modeling.load(tiny_xlmr)
    cfg = TrainConfig(steps=4, lr=1e-3, batch_size=8, max_length=32, bf16=False)
    with pytest.raises(UsageError, match="cannot stop at step 9 of a 4-step run"):
        train_loop(model, tokenizer, maltese_sentences[:20], [], _mlm, cfg, fidelity=Fidelity(9))


def test_best_weights_in_a_file_or_in_memory_train_the_same(tiny_xlmr, maltese_sentences, tmp_path):
    """Distillation with its best-weights copy in a file (the default on a CPU, where a copy in memory sits
    beside the model in the same RAM) ends with the very weights and metrics of the copy in memory; the
    file lives in the scratch folder while training and is gone afterwards. The held-out losses are made
    best at step 6 of 12 (+1 at every other evaluation), so the weights that come back are a copy's."""
    import torch

    from pipeline.distill import distill_step, init_student

    cfg = DistillConfig(steps=12, lr=3e-3, batch_size=8, max_length=32, eval_every=3, bf16=False)
    texts, heldout = maltese_sentences[:120], maltese_sentences[-24:]
    results = {}
    for where in ("memory", "file", "auto"):
        teacher, tokenizer = modeling.load(tiny_xlmr)
        student = init_student(teacher, 2, "stride")
        scratch, seen, evaluations = tmp_path / where, [], []

        def loss(model, batch, teacher=teacher, scratch=scratch, seen=seen, evaluations=evaluations):
            value, parts = distill_step(model, teacher, batch, cfg)
            if model.training:
                seen.append(sorted(p.name for p in scratch.rglob("*")) if scratch.exists() else [])
                evaluations.append(None)  # a step between evaluations
                return value, parts
            if not evaluations or evaluations[-1] is None:  # the first batch of an evaluation
                evaluations.append(sum(1 for e in evaluations if e is not None))
            return value + (0.0 if evaluations[-1] == 2 else 1.0), parts  # the third evaluation: step 6

        train = dataclasses.replace(TrainConfig.of(cfg), best_weights=where)
        metrics = train_loop(student, tokenizer, texts, heldout, loss, train, desc="distill", scratch=scratch)
        assert not scratch.exists() or not any(scratch.iterdir()), "the best-weights file was left behind"
        results[where] = (student.state_dict(), {k: v for k, v in metrics.items() if k != "seconds"}, seen[-1])
    memory, file, auto = results["memory"], results["file"], results["auto"]
    assert memory[1]["best_step"] == 6 and memory[1]["heldout_evals"] == 5
    for state, metrics, files in (file, auto):
        assert metrics == memory[1]
        assert all(torch.equal(state[name], tensor) for name, tensor in memory[0].items())
        assert files == ["best.safetensors"] or files[-1] == "best.safetensors"  # the copy was in the file meanwhile
    assert memory[2] == []


def test_heldout_rows_bounds_every_evaluation(tiny_bert, maltese_sentences):
    """Each held-out evaluation scores the first ``heldout_rows`` rows; None scores them all."""
    from pipeline.mlm import encode

    model, tokenizer = modeling.load(tiny_bert)
    heldout = maltese_sentences[-40:]
    rows = encode(tokenizer, heldout, 16)
    for limit, expected in ((5, rows[:5]), (None, rows)):
        cfg = TrainConfig(steps=2, lr=1e-3, batch_size=4, max_length=16, bf16=False, heldout_rows=limit)
        metrics = train_loop(model, tokenizer, maltese_sentences[:20], heldout, _mlm, cfg)
        assert metrics["heldout_tokens"] == sum(len(row) for row in expected) and metrics["heldout_evals"] == 2
