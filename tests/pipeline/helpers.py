"""Assertions shared by the pipeline tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from pipeline.sizes import config_parameters


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
