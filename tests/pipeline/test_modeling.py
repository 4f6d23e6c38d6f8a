"""Family access, load/save and `rebuild` for both families, plus the contract every written model meets."""

from __future__ import annotations


import pytest
import torch

from pipeline import modeling
from pipeline.errors import UsageError
from tests.pipeline.helpers import assert_hf_dir




@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_family_access_and_roundtrip(fixture, request, tmp_path):
    model, tokenizer = modeling.load(request.getfixturevalue(fixture))
    assert modeling.family(model) == ("xlmr" if fixture == "tiny_xlmr" else "bert")
    assert len(modeling.layers(model)) == 4
    assert modeling.lm_head(model).decoder.weight is modeling.embeddings(model).word_embeddings.weight
    modeling.save(model, tokenizer, tmp_path / "out")
    assert_hf_dir(tmp_path / "out")


def test_rebuild_keeps_weights_and_tie(tiny_bert):
    model, _ = modeling.load(tiny_bert)
    new = modeling.rebuild(model, model.state_dict())
    assert new is not model
    assert new.get_output_embeddings().weight is new.get_input_embeddings().weight
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    model.eval(), new.eval()
    assert torch.equal(model(input_ids=ids).logits, new(input_ids=ids).logits)


def test_fresh_applies_config_changes_and_follows_the_seed(tiny_xlmr):
    model, _ = modeling.load(tiny_xlmr)
    torch.manual_seed(0)
    first = modeling.fresh(model, num_hidden_layers=2)
    torch.manual_seed(0)
    second = modeling.fresh(model, num_hidden_layers=2)
    assert len(modeling.layers(first)) == 2 and model.config.num_hidden_layers == 4
    assert all(torch.equal(tensor, second.state_dict()[name]) for name, tensor in first.state_dict().items())
    assert first.training and type(first) is type(model)


def test_missing_model_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="model directory not found"):
        modeling.load(tmp_path / "nothing")


def test_select_keeps_the_index_along_every_named_dim():
    tensor = torch.arange(12.0).view(3, 4)  # rows [0..3], [4..7], [8..11]
    index = torch.tensor([2, 0])
    assert torch.equal(modeling.select(tensor, (0,), index), torch.tensor([[8.0, 9, 10, 11], [0, 1, 2, 3]]))
    assert torch.equal(modeling.select(tensor, (1,), index), torch.tensor([[2.0, 0], [6, 4], [10, 8]]))
    square = torch.arange(9.0).view(3, 3)
    assert torch.equal(modeling.select(square, (0, 1), index), torch.tensor([[8.0, 6], [2, 0]]))
    copy = modeling.select(tensor.t(), (), index)  # no dims: a contiguous copy
    assert torch.equal(copy, tensor.t()) and copy.is_contiguous()
    copy += 1
    modeling.select(tensor, (1,), index).mul_(0)
    assert torch.equal(tensor, torch.arange(12.0).view(3, 4))  # the input is never written through
