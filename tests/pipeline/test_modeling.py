"""Family access, load/save and `rebuild` for both families, plus the contract every written model meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from pipeline import modeling
from pipeline.errors import UsageError
from pipeline.sizes import config_parameters


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and many times faster when other processes share the cores.

    The other test modules of the pipeline import this fixture (``pytestmark``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_hf_dir(path: Path) -> torch.nn.Module:
    """Every stage output: loads with the stock Auto classes, weights tied, size == the dry-run formula."""
    model = AutoModelForMaskedLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = json.loads((Path(path) / "config.json").read_text())
    assert model.num_parameters() == config_parameters(config)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.config.vocab_size == len(tokenizer)
    metrics = Path(path) / "metrics.json"
    if metrics.exists():
        assert json.loads(metrics.read_text())["params"] == model.num_parameters()
    return model


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
