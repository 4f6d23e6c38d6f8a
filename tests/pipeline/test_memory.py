"""The memory estimator: its parts against the formulas by hand, the largest batch, the size parser."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import memory
from pipeline.config import AdaptConfig, DistillConfig, PruneConfig, TaskTraining
from pipeline.sizes import config_parameters

XLMR_BASE = {"model_type": "xlm-roberta", "vocab_size": 250_002, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 514,
             "type_vocab_size": 1, "pad_token_id": 1}
STUDENT = {**XLMR_BASE, "num_hidden_layers": 6}
MATMUL = 278_295_186 - (514 + 1) * 768  # what autocast casts: all but the position and token-type tables


def test_weights_gradients_and_optimiser_are_exact():
    assert config_parameters(XLMR_BASE) == 278_295_186
    adapt = memory.adapt(XLMR_BASE, AdaptConfig(), "cuda")
    assert (adapt.batch, adapt.seq_len, adapt.precision) == (32, 512, "bf16")
    assert adapt.weights == 4 * 278_295_186 + 2 * MATMUL
    assert adapt.gradients == 4 * 278_295_186 and adapt.optimizer == 8 * 278_295_186
    cpu = memory.adapt(XLMR_BASE, AdaptConfig(), "cpu")
    assert cpu.precision == "fp32" and cpu.weights == 4 * 278_295_186
    student = config_parameters(STUDENT)
    distill = memory.distill(STUDENT, XLMR_BASE, DistillConfig(), "cuda")
    assert distill.weights == 4 * (student + 278_295_186) + 2 * (student - 515 * 768)
    assert distill.gradients == 4 * student and distill.optimizer == 8 * student
    prune = memory.prune(STUDENT, PruneConfig(), "cuda")
    assert prune.gradients == 4 * 6 * (768 * 3072 + 3072) and prune.optimizer == 0  # the FFN input layers only


def test_activations_and_logits_by_hand():
    """8 x 512 tokens, bf16 on CUDA: per layer and token 7*2*h + 2*2*f + 8h + 2h (masks); the embeddings 5h;
    the head's transform at every position 3*2*h + 4h; the distillation's three [tokens, vocab] bf16 tensors
    (student, teacher, gradient buffer) and seven float32 chunks of 2^26 elements (268 rows of 250,002)."""
    h, f, tokens, vocab = 768, 3072, 8 * 512, 250_002
    e = memory.distill(STUDENT, XLMR_BASE, DistillConfig(), "cuda")
    layer = 7 * 2 * h + 2 * 2 * f + 8 * h + 2 * h
    teacher_pass = tokens * (2 * f + 16 * h)
    assert e.activations == 6 * tokens * layer + tokens * 5 * h + tokens * (3 * 2 * h + 4 * h) + teacher_pass
    assert e.logits == 3 * tokens * vocab * 2 + 4 * 7 * 268 * vocab
    assert e.logits / 2**30 == pytest.approx(7.47, abs=0.01)
    # on the CPU the math attention keeps its matrices: 12 heads x 512 positions x 12 bytes per token and layer
    cpu = memory.distill(STUDENT, XLMR_BASE, DistillConfig(), "cpu")
    cpu_layer = 7 * 4 * h + 2 * 4 * f + 8 * h + 2 * h + 12 * 12 * 512
    assert cpu.activations == (6 * tokens * cpu_layer + tokens * 5 * h + tokens * (3 * 4 * h + 4 * h)
                               + tokens * (4 * f + 16 * h) + 8 * 12 * 512 * tokens)


def test_a_larger_batch_never_needs_less_and_the_largest_batch_is_the_largest():
    at = lambda b: memory.distill(STUDENT, XLMR_BASE, DistillConfig(), "cuda", batch=b)  # noqa: E731
    totals = [at(b).total for b in range(1, 17)]
    assert totals == sorted(totals) and len(set(totals)) == 16
    available = (at(5).total + at(6).total) // 2
    assert memory.largest_batch(at, available, 8) == 5
    assert memory.largest_batch(at, at(8).total, 8) == 8 and memory.largest_batch(at, at(1).total - 1, 8) == 0


def test_sequence_length_is_capped_by_the_position_table_and_evaluation_is_float32():
    e = memory.distill(STUDENT, XLMR_BASE, dataclasses.replace(DistillConfig(), max_length=4096), "cuda")
    assert e.seq_len == 512  # 514 positions, numbered after the padding id
    ner = memory.evaluate(XLMR_BASE, TaskTraining(batch_size=64, max_length=256), "adapter", "cuda")
    assert (ner.batch, ner.seq_len, ner.precision) == (64, 256, "fp32")
    full = memory.evaluate(XLMR_BASE, TaskTraining(batch_size=64, max_length=256), "finetune", "cuda")
    assert full.gradients > 100 * ner.gradients and full.activations == ner.activations


@pytest.mark.parametrize(("text", "size"), [("80GiB", 80 * 2**30), ("80G", 80 * 2**30), ("24GB", 24 * 10**9),
                                            ("16000MiB", 16000 * 2**20), ("1.5 TiB", int(1.5 * 2**40)),
                                            ("123456", 123456), ("64gb", 64 * 10**9)])
def test_sizes_parse(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["80 gigs", "", "GiB", "-5GiB", "0", "1e3GB"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError, match="expected a size such as 80GiB, 24GB or 16000MiB"):
        memory.parse_size(text)


def test_a_rebuild_holds_the_source_its_selected_tensors_the_new_model_and_its_untied_decoder():
    """Truncation, trimming and pruning's last step build a new model from tensors selected from the old one;
    the new model's constructor allocates its own decoder (vocab x hidden) before tying it."""
    source = {**STUDENT, "intermediate_size": 2048}
    target = {**source, "hidden_size": 312}
    truncate = memory.rebuild(source, target, "truncate")
    assert truncate.stage == "truncate" and truncate.weights == truncate.total
    assert truncate.total == 4 * (config_parameters(source) + 2 * config_parameters(target) + 250_002 * 312)
    # pruning on the CPU: the larger of its pass and its rebuild; on a GPU the rebuild is in host memory
    for length, larger in ((128, "rebuild"), (512, "pass")):
        cfg = PruneConfig(max_length=length)
        estimates = {"pass": memory.prune(STUDENT, cfg, "cpu"), "rebuild": memory.rebuild(STUDENT, source, "prune")}
        assert memory.prune(STUDENT, cfg, "cpu", target=source) == estimates[larger], length
        assert memory.prune(STUDENT, cfg, "cuda", target=source) == memory.prune(STUDENT, cfg, "cuda")
