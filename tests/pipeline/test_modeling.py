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


def test_missing_model_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="model directory not found"):
        modeling.load(tmp_path / "nothing")
