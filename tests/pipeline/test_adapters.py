"""Bottleneck adapters on both families: placement, frozen encoder, trainable parameters, heads."""

from __future__ import annotations

import pytest
import torch

from pipeline.adapters import AdaptedOutput, BottleneckAdapter, add_adapters, build_task_model, encoder_layers


def test_bottleneck_shape_and_residual():
    adapter = BottleneckAdapter(32, 16)
    assert adapter.down.out_features == 2 and adapter.up.in_features == 2
    torch.nn.init.zeros_(adapter.up.weight)
    x = torch.randn(2, 5, 32)
    assert torch.equal(adapter(x), x)  # zero up-projection: exactly the residual
    with pytest.raises(ValueError):
        BottleneckAdapter(32, 0)


@pytest.mark.parametrize("family", ["tiny_xlmr", "tiny_bert"])
def test_adapter_model_trains_only_adapters_and_head(family, request):
    model_dir = request.getfixturevalue(family)
    model = build_task_model(str(model_dir), num_labels=3, kind="classification", method="adapter",
                             reduction_factor=4)
    layers = encoder_layers(model.encoder)
    assert all(isinstance(layer.output, AdaptedOutput) for layer in layers)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n or n.startswith("head.") for n in trainable)
    assert any(".adapter.down" in n for n in trainable)
    ids = torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    logits = model(ids, mask)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    frozen = next(p for n, p in model.named_parameters() if "embeddings" in n)
    assert frozen.grad is None


def test_adapter_matches_adapterhub_seq_bn_placement(tiny_xlmr):
    """With the adapter's up-projection at zero the block is LayerNorm(LayerNorm(h + x) + x)."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(tiny_xlmr), add_pooling_layer=False).eval()
    block = encoder_layers(encoder)[0].output
    h, x = torch.randn(2, 3, block.dense.in_features), torch.randn(2, 3, 32)
    expected = block.LayerNorm(block.LayerNorm(block.dense(h) + x) + x)
    add_adapters(encoder, 16)
    wrapped = encoder_layers(encoder)[0].output
    torch.nn.init.zeros_(wrapped.adapter.up.weight)
    assert torch.allclose(wrapped(h, x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="already has an adapter"):
        add_adapters(encoder, 16)


def test_finetune_trains_everything_and_token_head(tiny_bert):
    model = build_task_model(str(tiny_bert), num_labels=5, kind="tokens", method="finetune")
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(layer.output, AdaptedOutput) for layer in encoder_layers(model.encoder))
    logits = model(torch.tensor([[2, 10, 11, 3]]), torch.ones(1, 4, dtype=torch.long))
    assert logits.shape == (1, 4, 5)


def test_mean_pooling_reads_only_the_real_tokens():
    """``pooling="mean"``: padding does not change a text's logits; the first-token head reads position 0."""
    from pipeline.adapters import ClassificationHead

    torch.manual_seed(0)
    mean, first = ClassificationHead(8, 3, 0.0, "mean").eval(), ClassificationHead(8, 3, 0.0, "first").eval()
    hidden = torch.randn(1, 5, 8)
    padded = torch.cat([hidden, torch.randn(1, 2, 8) * 100], dim=1)  # two padding positions full of noise
    mask = torch.tensor([[1] * 5 + [0, 0]])
    torch.testing.assert_close(mean(padded, mask), mean(hidden, torch.ones(1, 5, dtype=torch.long)))
    expected = mean.out(torch.tanh(mean.dense(hidden.mean(1))))
    torch.testing.assert_close(mean(hidden, torch.ones(1, 5)), expected)
    first.load_state_dict(mean.state_dict())
    torch.testing.assert_close(first(padded, mask), first.out(torch.tanh(first.dense(hidden[:, 0]))))
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        ClassificationHead(8, 3, 0.0, "max")
