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


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_masked_only_loss_equals_the_full_mlm_loss(fixture, request, maltese_sentences):
    import torch

    from pipeline.adapt import masked_lm_loss
    from pipeline.losses import mlm_loss
    from pipeline.mlm import encode, mlm_batches

    model, tokenizer = modeling.load(request.getfixturevalue(fixture))
    model.eval()
    rows = encode(tokenizer, maltese_sentences[:16], 32)
    batch = next(mlm_batches(tokenizer, rows, 16, 0.15, torch.Generator().manual_seed(0)))
    full = mlm_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
    masked, parts = masked_lm_loss(model, batch)
    assert torch.allclose(masked, full, atol=1e-5) and parts["mlm"] == pytest.approx(float(full.detach()), abs=1e-5)


def test_tokenizer_command_and_from_scratch_with_a_trained_tokenizer(shared_data, tmp_path):
    raw = str(shared_data / "mt" / "raw" / "train.parsemetsv")
    assert cli(["tokenizer", "--corpus", raw, "--family", "bert", "--vocab-size", "700", "--out", str(tmp_path / "tok")]) == 0
    assert len(modeling.load_tokenizer(tmp_path / "tok")) == 700
    assert cli(["tokenizer", "--corpus", raw, "--max-lines", "3", "--vocab-size", "5000", "--out", str(tmp_path / "x")]) == 2
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "xlm-roberta", "hidden_size": 32, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 34,
                                  "type_vocab_size": 1, "pad_token_id": 1, "vocab_size": 1}))
    out = tmp_path / "teacher"
    assert cli(["adapt", "--from-scratch", str(config), "--vocab-size", "600", "--corpus", raw, "--max-lines", "500",
                "--out", str(out), "--steps", "2", "--max-length", "32", "--device", "cpu"]) == 0
    model = assert_hf_dir(out)
    assert model.config.vocab_size == 600 and type(modeling.load_tokenizer(out)).__name__ == "XLMRobertaTokenizer"
    assert cli(["adapt", "--from-scratch", str(config), "--vocab-size", "600", "--tokenizer", str(out),
                "--corpus", raw, "--out", str(tmp_path / "y")]) == 2


def test_a_built_teacher_has_the_size_the_spec_states(shared_data, tmp_path):
    from pipeline.config import CorpusSource, ScratchConfig
    from pipeline.families import scratch_config
    from pipeline.sizes import config_parameters
    from pipeline.trial import build_teacher

    build = ScratchConfig(family="xlmr", vocab_size=500, num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                          intermediate_size=64, max_length=32)
    corpus = CorpusSource(str(shared_data / "mt" / "raw" / "train.parsemetsv"), max_lines=400)
    heldout = CorpusSource(str(shared_data / "mt" / "raw" / "test.parsemetsv"), max_lines=20)
    folder = build_teacher(build, FAST, corpus, heldout, str(tmp_path))
    assert build_teacher(build, FAST, corpus, heldout, str(tmp_path)) == folder  # cached
    model = assert_hf_dir(folder)
    stated = scratch_config("xlmr", vocab_size=500, num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                            intermediate_size=64, max_length=32)
    assert model.num_parameters() == config_parameters(stated)
    assert {k: model.config.to_dict()[k] for k in stated if k != "model_type"} == {k: v for k, v in stated.items() if k != "model_type"}
