"""FLOPs from configs and stage metrics, against the formula worked out by hand."""

from __future__ import annotations

import pytest

from pipeline.flops import distill_flops, forward_flops, heldout_share, mlm_training_flops, prune_flops, tokens_for_flops

SMALL = {"num_hidden_layers": 2, "hidden_size": 4, "intermediate_size": 8, "vocab_size": 10}
BIG = {"num_hidden_layers": 3, "hidden_size": 8, "intermediate_size": 16, "vocab_size": 10}


def test_forward_flops_by_hand():
    # per token: 2 layers x (4*16 + 2*4*8 + 2*5*4) + 16 + 4*10 = 2 x 168 + 56 = 392 multiply-adds
    assert forward_flops(SMALL, tokens=3, seq_len=5) == 2 * 392 * 3


def test_stage_flops_count_training_teacher_and_heldout_passes():
    small, big = forward_flops(SMALL, 1, 5), forward_flops(BIG, 1, 5)
    metrics = {"tokens": 100, "heldout_evals": 3, "heldout_tokens": 20}
    assert mlm_training_flops(SMALL, metrics, 5) == 3 * 100 * small + 3 * 20 * small
    assert distill_flops(SMALL, BIG, metrics, 5) == pytest.approx(100 * (3 * small + big) + 60 * (small + big))
    assert prune_flops(BIG, {"positions": 7}, 5) == 3 * 7 * big
    assert tokens_for_flops(SMALL, 3 * 50 * small, 5) == pytest.approx(50)


def test_heldout_share_by_hand():
    from pipeline.config import DistillConfig

    small, big = forward_flops(SMALL, 1, 5), forward_flops(BIG, 1, 5)
    cfg = DistillConfig(batch_size=2, max_length=5, eval_every=10, heldout_rows=4)
    train, held = 10 * 2 * 5 * (3 * small + big), 4 * 5 * (small + big)  # per 10 steps, per evaluation
    assert heldout_share(SMALL, BIG, cfg, heldout_rows=100) == pytest.approx(held / (train + held))
    assert heldout_share(SMALL, BIG, cfg, heldout_rows=3) == pytest.approx(0.75 * held / (train + 0.75 * held))
    # 25 steps: evaluations before the first step and at 10, 20 and 25
    assert heldout_share(SMALL, BIG, cfg, 100, steps=25) == pytest.approx(4 * held / (2.5 * train + 4 * held))


def test_heldout_evaluation_is_under_a_tenth_of_each_distillation_of_the_maltese_spec():
    """Both distillations of the paper's path at specs/maltese.yaml's settings (batch 8, 512 tokens, an
    evaluation every 500 steps, 2,000 held-out documents): held-out evaluation takes 3-4% of the compute at
    the default ``heldout_rows``, where scoring every held-out document took 21-24%."""
    import dataclasses

    from search.spec import load_spec, teacher_config
    from tests.conftest import REPO

    spec = load_spec(REPO / "specs" / "maltese.yaml")
    teacher = dict(teacher_config(spec))
    student = {**teacher, "num_hidden_layers": 6}
    pruned = {**student, "intermediate_size": 2048}
    truncated = {**pruned, "hidden_size": 312}
    rows = spec.data.heldout.max_lines
    for small, big, cfg in ((student, teacher, spec.distill), (truncated, pruned, spec.truncate.distill)):
        assert cfg.heldout_rows == 256 and cfg.eval_every == 500 and rows == 2000
        assert 0.03 < heldout_share(small, big, cfg, rows) < 0.04
        assert 0.2 < heldout_share(small, big, dataclasses.replace(cfg, heldout_rows=None), rows) < 0.25
