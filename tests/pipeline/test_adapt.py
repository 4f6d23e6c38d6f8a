"""Adaptation and pretraining from scratch on real Maltese text."""

from __future__ import annotations

import json

import pytest

from pipeline import modeling
from pipeline.__main__ import main as cli
from pipeline.adapt import adapt, pretrain_from_scratch
from pipeline.config import AdaptConfig
from pipeline.errors import UsageError
from tests.pipeline.helpers import assert_hf_dir

FAST = AdaptConfig(steps=20, lr=2e-3, batch_size=8, max_length=32, eval_every=10, bf16=False)


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_adapt_lowers_mlm_loss(fixture, request, maltese_sentences):
    model, tokenizer = modeling.load(request.getfixturevalue(fixture))
    _, _, metrics = adapt(model, tokenizer, maltese_sentences[:300], maltese_sentences[-40:], FAST)
    assert metrics["steps"] == 20 and metrics["params"] == model.num_parameters()
    assert metrics["loss_end"] < metrics["loss_start"]


def test_from_scratch_dir_and_config_path(tiny_bert, maltese_sentences, tmp_path):
    model, tokenizer, metrics = pretrain_from_scratch(tiny_bert, None, maltese_sentences[:100], maltese_sentences[-16:], FAST)
    assert metrics["steps"] == 20 and model.config.vocab_size == len(tokenizer)
    with pytest.raises(UsageError, match="needs --tokenizer"):
        pretrain_from_scratch(tiny_bert / "config.json", None, maltese_sentences[:10], [], FAST)
    bad = json.loads((tiny_bert / "config.json").read_text()) | {"hidden_size": 30}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(UsageError, match="not divisible by num_attention_heads=4"):
        pretrain_from_scratch(tmp_path / "bad.json", tokenizer, maltese_sentences[:10], [], FAST)


def test_adapt_cli_from_scratch(tiny_xlmr, shared_data, tmp_path):
    flores = str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn")
    out = tmp_path / "teacher"
    assert cli(["adapt", "--from-scratch", str(tiny_xlmr / "config.json"), "--tokenizer", str(tiny_xlmr),
                "--corpus", flores, "--out", str(out), "--steps", "4", "--max-length", "32", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and {"loss_start", "loss_end", "heldout_loss"} <= set(metrics)
    assert_hf_dir(out)
    assert cli(["adapt", "--model", str(out), "--corpus", flores, "--out", str(tmp_path / "a"), "--steps", "2",
                "--max-length", "32"]) == 0
    assert cli(["adapt", "--model", str(tmp_path / "missing"), "--corpus", flores, "--out", str(tmp_path / "b")]) == 2
