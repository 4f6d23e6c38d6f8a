"""Loss terms: masking of padding, the reference behaviour, KL with temperature."""

from __future__ import annotations

import pytest

import torch
import torch.nn.functional as F

from pipeline.config import DistillConfig
from pipeline.losses import distill_loss, kd_kl, kd_mse, mlm_loss


def test_mse_masks_padding_and_reference_counts_it():
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected = ((s - t) ** 2)[mask.bool()].mean()
    assert torch.allclose(kd_mse(s, t, mask), expected)
    assert torch.allclose(kd_mse(s, t, None), ((s - t) ** 2).mean())


def test_kl_temperature_and_zero_for_equal():
    s, t = torch.randn(2, 3, 11), torch.randn(2, 3, 11)
    assert kd_kl(t, t, 2.0).abs() < 1e-6
    T = 3.0
    p = F.softmax(t / T, -1)
    manual = (p * (p.log() - F.log_softmax(s / T, -1))).sum(-1).mean() * T * T
    assert torch.allclose(kd_kl(s, t, T), manual, atol=1e-5)


def test_distill_loss_mixes_terms():
    s, t = torch.randn(2, 4, 9), torch.randn(2, 4, 9)
    labels = torch.full((2, 4), -100)
    labels[0, 1], labels[1, 2] = 3, 5
    mask = torch.ones(2, 4, dtype=torch.long)
    loss, parts = distill_loss(s, t, labels, mask, DistillConfig(alpha=0.25))
    assert torch.allclose(loss, 0.25 * mlm_loss(s, labels) + 0.75 * kd_mse(s, t, mask))
    assert set(parts) == {"mlm", "kd"}


@pytest.mark.parametrize("kind, mask_padding, temperature", [("mse", True, 1.0), ("mse", False, 1.0), ("kl", True, 2.0), ("kl", False, 1.0)])
def test_fused_loss_equals_reference_in_value_and_gradient(kind, mask_padding, temperature, monkeypatch):
    import pipeline.losses as losses

    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 3 * 13)  # several chunks of 3 rows
    torch.manual_seed(0)
    student = torch.randn(3, 5, 13, requires_grad=True)
    teacher = torch.randn(3, 5, 13)
    labels = torch.full((3, 5), -100)
    labels[0, 1], labels[1, 3], labels[2, 0] = 4, 7, 12
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    cfg = DistillConfig(alpha=0.3, kd_loss=kind, temperature=temperature, mask_padding=mask_padding)
    fused, parts = losses.distill_loss(student, teacher, labels, mask, cfg)
    (grad,) = torch.autograd.grad(fused * 2.0, student)
    reference, reference_parts = losses.reference_distill_loss(student, teacher, labels, mask, cfg)
    (expected,) = torch.autograd.grad(reference * 2.0, student)
    torch.testing.assert_close(fused, reference)
    torch.testing.assert_close(grad, expected)
    assert parts == pytest.approx(reference_parts)


class _Allocations:
    """Records the bytes of every new storage an operation makes (views of known tensors excluded)."""

    def __init__(self, *known: torch.Tensor):
        from torch.utils._python_dispatch import TorchDispatchMode

        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for tensor in torch.utils._pytree.tree_leaves(out):
                    if isinstance(tensor, torch.Tensor):
                        storage = tensor.untyped_storage()
                        if storage.data_ptr() not in recorder.known:
                            recorder.sizes.append(storage.nbytes())
                return out

        self.known = {tensor.untyped_storage().data_ptr() for tensor in known}
        self.sizes: list[int] = []
        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_fused_loss_allocates_no_gradient_without_grad(kind, monkeypatch):
    """Under no_grad (held-out evaluation) nothing of the logits' size is allocated: only chunks. With a
    gradient wanted, the logits-sized gradient buffer is there (so the recorder does see it)."""
    import pipeline.losses as losses

    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 3 * 13)  # chunks of 3 rows of 15
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 5, 13, requires_grad=True), torch.randn(3, 5, 13)
    labels = torch.full((3, 5), -100)
    labels[0, 1], labels[2, 4] = 4, 7
    mask = torch.ones(3, 5, dtype=torch.long)
    cfg = DistillConfig(kd_loss=kind)
    logits_bytes = 3 * 5 * 13 * 4
    with torch.no_grad(), _Allocations(student, teacher, labels, mask) as seen:
        quiet, _ = losses.distill_loss(student, teacher, labels, mask, cfg)
    assert seen.sizes and max(seen.sizes) == 3 * 13 * 4  # one chunk of float32 logits at most
    with _Allocations(student, teacher, labels, mask) as seen:
        loud, _ = losses.distill_loss(student, teacher, labels, mask, cfg)
    assert max(seen.sizes) == logits_bytes
    assert not quiet.requires_grad and loud.requires_grad
    torch.testing.assert_close(quiet, loud.detach(), rtol=0, atol=0)
    with _Allocations(student, teacher, labels, mask) as seen:  # logits that need no gradient: none either
        losses.distill_loss(student.detach(), teacher, labels, mask, cfg)
    assert max(seen.sizes) < logits_bytes


def test_backward_hands_on_the_saved_gradient_buffer():
    """The backward pass scales the gradient buffer it saved and hands that on: no second buffer of the
    logits' size (4.1 GB in bf16 at 8 x 512 x 250,002) exists beside it; the gradient stays the reference's."""
    from pipeline.losses import reference_distill_loss

    torch.manual_seed(1)
    leaf, teacher = torch.randn(2, 4, 9, requires_grad=True), torch.randn(2, 4, 9)
    labels = torch.full((2, 4), -100)
    labels[1, 2] = 5
    mask = torch.ones(2, 4, dtype=torch.long)
    student = leaf * 1.0  # logits as a model makes them: not a leaf
    loss, _ = distill_loss(student, teacher, labels, mask, DistillConfig())
    saved = loss.grad_fn.saved_tensors[0].untyped_storage().data_ptr()
    handed = []
    student.register_hook(lambda grad: handed.append(grad.untyped_storage().data_ptr()))
    (loss * 3.0).backward()
    assert handed == [saved]
    reference, _ = reference_distill_loss(leaf, teacher, labels, mask, DistillConfig())
    (expected,) = torch.autograd.grad(reference * 3.0, leaf)
    torch.testing.assert_close(leaf.grad, expected)


@pytest.mark.parametrize("chunk_rows", [1, 2, 5, 1000])
def test_head_loss_chunked_equals_full_logits_in_value_and_gradient(chunk_rows, monkeypatch, tiny_xlmr,
                                                                   maltese_sentences):
    """The MLM loss at the masked positions, chunked (recomputed in the backward pass), against
    `mlm_loss` over the full ``[batch, seq, vocab]`` logits: the same loss and the same gradient of
    every weight (1000 rows: one chunk, the exact single cross-entropy)."""
    import pipeline.losses as losses
    from pipeline import modeling
    from pipeline.mlm import encode, mlm_batches

    model, tokenizer = modeling.load(tiny_xlmr)
    model.eval()
    vocab = model.config.vocab_size
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", chunk_rows * vocab)
    rows = encode(tokenizer, maltese_sentences[:6], 32)
    batch = next(mlm_batches(tokenizer, rows, 6, 0.3, torch.Generator().manual_seed(0), shuffle=False))
    labels = batch.pop("labels")
    assert (labels != -100).sum() > 5  # several chunks for every chunk size but the largest
    full = mlm_loss(model(**batch).logits, labels)
    expected = torch.autograd.grad(full, list(model.parameters()))
    hidden = modeling.base_model(model)(**batch).last_hidden_state
    chunked = losses.head_mlm_loss(modeling.lm_head(model), hidden, labels, vocab)
    got = torch.autograd.grad(chunked, list(model.parameters()))
    torch.testing.assert_close(chunked, full)
    for (name, _), a, b in zip(model.named_parameters(), got, expected):
        torch.testing.assert_close(a, b, msg=name)
