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
