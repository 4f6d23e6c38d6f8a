"""The family table: lookup by model_type, the position limit of both families, vocabulary-sized keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM, BertConfig, XLMRobertaConfig

from pipeline.families import FAMILIES, family_of, max_positions

REPO = Path(__file__).resolve().parents[2]
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 37}


def test_family_of_dicts_and_configs():
    assert family_of({"model_type": "xlm-roberta"}).name == "xlmr"
    assert family_of({"model_type": "camembert"}).encoder == "roberta"
    assert family_of({"model_type": "bert"}).lm_head == "cls.predictions"
    assert family_of(XLMRobertaConfig()).tokenizer == "unigram"
    assert family_of(BertConfig()).tokenizer == "wordpiece"


def test_unsupported_model_type_names_it_and_the_choices():
    expected = r"model_type 'gpt2' is not supported; expected one of \['bert', 'camembert', 'roberta', 'xlm-roberta'\]"
    with pytest.raises(ValueError, match=expected):
        family_of({"model_type": "gpt2"})
    with pytest.raises(ValueError, match="model_type None is not supported"):
        family_of({})


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
        ({"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 0}, 513),
        ({"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": None}, 512),
        ({"model_type": "xlm-roberta", "max_position_embeddings": 514}, 512),
        ({"model_type": "camembert", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
        ({"model_type": "bert", "max_position_embeddings": 512, "pad_token_id": 0}, 512),
        ({"model_type": "bert", "max_position_embeddings": 512, "pad_token_id": None}, 512),
    ],
)
def test_max_positions_of_dicts(config, expected):
    assert max_positions(config) == expected


def test_max_positions_of_pretrained_configs(tiny_xlmr, tiny_bert):
    assert max_positions(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=None)) == 512
    assert max_positions(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=3)) == 510
    assert max_positions(BertConfig(max_position_embeddings=512, pad_token_id=None)) == 512
    assert max_positions(AutoConfig.from_pretrained(tiny_xlmr)) == 64  # 66 rows, padding id 1
    assert max_positions(AutoConfig.from_pretrained(tiny_bert)) == 64


@pytest.mark.parametrize("config_class", [XLMRobertaConfig, BertConfig])
def test_vocab_tensors_are_the_vocabulary_sized_keys(config_class):
    vocab_size = 97  # no other dimension of the tiny model has this size
    model = AutoModelForMaskedLM.from_config(config_class(vocab_size=vocab_size, max_position_embeddings=66, **TINY))
    family = family_of(model.config)
    sized = {name for name, tensor in model.state_dict().items() if tensor.shape[0] == vocab_size}
    assert sized == set(family.vocab_tensors)
    assert torch.equal(model.state_dict()[family.word_embeddings], model.get_input_embeddings().weight)


def test_model_types_are_unique_and_the_table_imports_without_torch():
    model_types = [model_type for family in FAMILIES for model_type in family.model_types]
    assert len(model_types) == len(set(model_types))
    code = "import sys, pipeline.families, pipeline.sizes; sys.exit(bool({'torch', 'transformers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0
