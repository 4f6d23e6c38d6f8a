"""Masking statistics and batch shapes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from pipeline.mlm import encode, mask_tokens, mlm_batches


def test_mask_tokens_statistics():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (64, 128))
    ids[:, 0] = 1
    masked, labels = mask_tokens(ids, torch.tensor([0, 1]), 4, 1000, 0.15, generator)
    chosen = labels != -100
    assert 0.13 < chosen.float().mean() < 0.17
    assert not chosen[:, 0].any()  # specials never masked
    assert torch.equal(labels[chosen], ids[chosen])
    share_mask = (masked[chosen] == 4).float().mean()
    share_kept = (masked[chosen] == ids[chosen]).float().mean()
    assert 0.75 < share_mask < 0.85 and 0.07 < share_kept < 0.14
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_at_least_one_masked_position():
    generator = torch.Generator().manual_seed(0)
    ids = torch.tensor([[0, 7, 2]])
    for _ in range(20):
        _, labels = mask_tokens(ids, torch.tensor([0, 2]), 4, 10, 0.01, generator)
        assert (labels != -100).sum() >= 1


def test_batches(tiny_xlmr, maltese_sentences):
    tokenizer = AutoTokenizer.from_pretrained(tiny_xlmr)
    rows = encode(tokenizer, maltese_sentences[:20], 16)
    assert all(len(row) <= 16 for row in rows)
    batches = list(mlm_batches(tokenizer, rows, 8, 0.15, torch.Generator().manual_seed(0)))
    assert [len(b["input_ids"]) for b in batches] == [8, 8, len(rows) - 16]
    for batch in batches:
        padding = batch["attention_mask"] == 0
        assert (batch["labels"][padding] == -100).all()
        assert (batch["input_ids"][padding] == tokenizer.pad_token_id).all()


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_packed_rows_hold_every_token_and_no_padding(fixture, request, maltese_sentences):
    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    texts = maltese_sentences[:200]
    rows = encode(tokenizer, texts, 32, pack=True)
    assert all(len(row) == 32 for row in rows[:-1]) and 3 <= len(rows[-1]) <= 32
    assert all(row[0] == tokenizer.cls_token_id and row[-1] == tokenizer.sep_token_id for row in rows)
    pieces = [t for row in rows for t in row[1:-1]]
    expected = [t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]]
    assert pieces == expected  # nothing truncated, nothing lost, in order
    assert encode(tokenizer, [], 32, pack=True) == []
