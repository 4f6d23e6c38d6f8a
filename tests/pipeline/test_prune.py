"""FFN pruning: exact at the current width, importance-ordered and loadable when narrower."""

from __future__ import annotations

import pytest
import torch

from pipeline import modeling
from pipeline.__main__ import main as cli
from pipeline.config import PruneConfig
from pipeline.errors import UsageError
from pipeline.prune import importance, prune_ffn
from tests.pipeline.helpers import assert_hf_dir

CFG = PruneConfig(batch_size=8, max_length=32, max_batches=4)


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_prune_to_current_width_changes_no_output(fixture, request, maltese_sentences):
    model, tokenizer = modeling.load(request.getfixturevalue(fixture))
    new, _, metrics = prune_ffn(model, tokenizer, model.config.intermediate_size, maltese_sentences[:32], CFG)
    model.eval(), new.eval()
    batch = tokenizer(maltese_sentences[100:104], padding=True, truncation=True, max_length=32, return_tensors="pt")
    torch.testing.assert_close(model(**batch).logits, new(**batch).logits, rtol=1e-5, atol=1e-5)
    assert metrics["params"] == model.num_parameters()


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_prune_keeps_most_important_neurons(fixture, request, maltese_sentences, tmp_path):
    model, tokenizer = modeling.load(request.getfixturevalue(fixture))
    ffn, heads = importance(model, tokenizer, maltese_sentences[:32], CFG)
    assert ffn.shape == (4, 37) and heads.shape == (4, 4) and (ffn > 0).all()
    new, tokenizer, _ = prune_ffn(model, tokenizer, 20, maltese_sentences[:32], CFG)
    top = ffn[0].argsort(descending=True)[:20]
    old_b1 = modeling.layers(model)[0].intermediate.dense.bias
    torch.testing.assert_close(modeling.layers(new)[0].intermediate.dense.bias, old_b1[top])
    modeling.save(new, tokenizer, tmp_path / "out")
    assert assert_hf_dir(tmp_path / "out").config.intermediate_size == 20


def test_the_pruned_model_owns_its_weights(tiny_xlmr, maltese_sentences):
    """The rebuild reads the old model's tensors without cloning them, and the new model copies them in:
    training the new model leaves the old one as it was."""
    model, tokenizer = modeling.load(tiny_xlmr)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    new, _, _ = prune_ffn(model, tokenizer, 20, maltese_sentences[:32], CFG)
    old_storage = {tensor.untyped_storage().data_ptr() for tensor in model.state_dict().values()}
    assert not old_storage & {tensor.untyped_storage().data_ptr() for tensor in new.state_dict().values()}
    with torch.no_grad():
        for parameter in new.parameters():
            parameter.add_(1.0)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0, msg=name)


def test_prune_rejects_wider_ffn(tiny_bert, maltese_sentences):
    model, tokenizer = modeling.load(tiny_bert)
    with pytest.raises(UsageError, match="between 1 and the model's 37"):
        prune_ffn(model, tokenizer, 64, maltese_sentences[:8], CFG)


def test_prune_cli(tiny_bert, shared_data, tmp_path):
    flores = shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn"
    args = ["prune", "--model", str(tiny_bert), "--ffn", "16", "--corpus", str(flores), "--out", str(tmp_path / "o")]
    assert cli(args + ["--max-batches", "2"]) == 0
    assert_hf_dir(tmp_path / "o")


@pytest.mark.parametrize("fixture", ["tiny_xlmr", "tiny_bert"])
def test_importance_is_the_same_chunked_and_in_one_piece(fixture, request, maltese_sentences, monkeypatch):
    """The importance pass over the masked positions, in chunks of 2 rows recomputed in the backward pass,
    scores every neuron and head as the pass in one piece does."""
    import pipeline.losses as losses

    model, tokenizer = modeling.load(request.getfixturevalue(fixture))
    whole = importance(model, tokenizer, maltese_sentences[:32], CFG)
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 2 * model.config.vocab_size)
    chunked = importance(model, tokenizer, maltese_sentences[:32], CFG)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-5, atol=1e-6)


def test_importance_pass_gives_gradients_to_the_ffn_input_layers_only(tiny_xlmr, maltese_sentences, monkeypatch):
    """Only the weights the scores read get gradient buffers (the embeddings alone are 768 MB of them at
    XLM-R's vocabulary); afterwards every weight trains again."""
    import pipeline.prune as prune
    from pipeline.losses import head_mlm_loss

    model, tokenizer = modeling.load(tiny_xlmr)
    seen = []

    def spy(head, hidden, labels, vocab_size):
        seen.append(sorted(name for name, p in model.named_parameters() if p.requires_grad))
        return head_mlm_loss(head, hidden, labels, vocab_size)

    monkeypatch.setattr(prune, "head_mlm_loss", spy)
    importance(model, tokenizer, maltese_sentences[:16], CFG)
    expected = sorted(f"roberta.encoder.layer.{i}.intermediate.dense.{w}" for i in range(4) for w in ("weight", "bias"))
    assert seen and all(names == expected for names in seen)
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())
