"""FLOPs from configs and stage metrics, against the formula worked out by hand."""

from __future__ import annotations

import pytest

from pipeline.flops import distill_flops, forward_flops, mlm_training_flops, prune_flops, tokens_for_flops

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
