"""Hidden-size truncation: identity at the current size, sizes and loading at smaller ones."""

from __future__ import annotations

import pytest
import torch

from pipeline import modeling
from pipeline.__main__ import main as cli
from pipeline.errors import UsageError
from pipeline.truncate import truncate_hidden
from tests.pipeline.helpers import assert_hf_dir


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_truncate_to_current_size_changes_nothing(fixture, request):
    model, tokenizer = modeling.load(request.getfixturevalue(fixture))
    model.eval()
    new, _ = truncate_hidden(model, tokenizer, model.config.hidden_size)
    batch = tokenizer(["Il-Prim Ministru qal li", "Malta"], padding=True, return_tensors="pt")
    new.eval()
    assert torch.equal(model(**batch).logits, new(**batch).logits)


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
@pytest.mark.parametrize("method", ["first", "svd"])
def test_truncate_writes_a_loadable_smaller_model(fixture, method, request, tmp_path):
    model, tokenizer = modeling.load(request.getfixturevalue(fixture))
    new, tokenizer = truncate_hidden(model, tokenizer, 16, method)
    assert new.config.hidden_size == 16
    if method == "first":
        word = modeling.embeddings(model).word_embeddings.weight
        assert torch.equal(modeling.embeddings(new).word_embeddings.weight, word[:, :16])
    modeling.save(new, tokenizer, tmp_path / "out")
    assert_hf_dir(tmp_path / "out")


def test_truncate_rejects_bad_sizes(tiny_bert):
    model, tokenizer = modeling.load(tiny_bert)
    with pytest.raises(UsageError, match="not divisible by num_attention_heads=4"):
        truncate_hidden(model, tokenizer, 18)
    with pytest.raises(UsageError, match="between 4 and the model's 32"):
        truncate_hidden(model, tokenizer, 64)


def test_truncate_cli(tiny_xlmr, tmp_path):
    assert cli(["truncate", "--model", str(tiny_xlmr), "--hidden", "24", "--out", str(tmp_path / "o")]) == 0
    assert assert_hf_dir(tmp_path / "o").config.hidden_size == 24
    assert cli(["truncate", "--model", str(tiny_xlmr), "--hidden", "30", "--out", str(tmp_path / "p")]) == 2
