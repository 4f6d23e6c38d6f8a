"""Loss terms of adaptation and distillation, as plain tensor functions.

All take logits ``[batch, seq, vocab]`` in any float dtype and compute in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from pipeline.memory import CHUNK_ELEMENTS

__all__ = ["mlm_loss", "head_mlm_loss", "kd_mse", "kd_kl", "distill_loss", "reference_distill_loss"]

# rows of [rows, vocab] float32 temporaries per chunk of the fused losses: about 256 MiB each
_CHUNK_ELEMENTS = CHUNK_ELEMENTS


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over positions whose label is not -100.

    Args:
        logits: ``[batch, seq, vocab]``.
        labels: ``[batch, seq]``, -100 where nothing is predicted.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)


def head_mlm_loss(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Cross-entropy of the MLM ``head`` at the positions whose label is not -100, chunked over them.

    Equal to `mlm_loss` of the full logits ``head(hidden)`` (the other positions add nothing), but the
    head runs at the labelled positions only, at most ``_CHUNK_ELEMENTS // vocab_size`` rows at a time;
    with a gradient, each chunk's logits are recomputed in the backward pass instead of kept
    (`torch.utils.checkpoint`). Memory then holds one chunk of ``[rows, vocab]`` logits and its float32
    loss temporaries, whatever the batch: at XLM-R's 250,002 pieces, 8 x 512 tokens would otherwise
    need about 12 GiB of float32 logits, log-probabilities and their gradient. A batch whose labelled
    positions fit one chunk computes exactly what a single ``cross_entropy`` over them does.

    Args:
        head: maps ``[rows, hidden]`` to ``[rows, vocab]`` logits (`pipeline.modeling.lm_head`).
        hidden: ``[batch, seq, hidden]`` last hidden states of the encoder.
        labels: ``[batch, seq]``, -100 where nothing is predicted.
        vocab_size: the head's output size (sets the chunk's rows).
    """
    chosen = labels != -100  # [batch, seq]
    rows, targets = hidden[chosen], labels[chosen]  # [n, hidden], [n]
    step = max(1, _CHUNK_ELEMENTS // vocab_size)
    if len(targets) <= step:
        return F.cross_entropy(head(rows).float(), targets)
    grad = torch.is_grad_enabled()

    def chunk_sum(part: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(part).float(), target, reduction="sum")

    total = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), step):
        part, target = rows[start : start + step], targets[start : start + step]
        total = total + (checkpoint(chunk_sum, part, target, use_reentrant=False) if grad else chunk_sum(part, target))
    return total / len(targets)


def kd_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between logits, over the whole vocabulary.

    Args:
        student: ``[batch, seq, vocab]`` student logits.
        teacher: ``[batch, seq, vocab]`` teacher logits (no gradient needed).
        mask: ``[batch, seq]``, 1 for positions that count (real tokens); ``None`` counts every position
            including padding, as the reference scripts do.
    """
    keep = None if mask is None else mask.bool()
    if keep is None or bool(keep.all()):
        return F.mse_loss(student.float(), teacher.float())
    # indexing keeps only real positions: [n_real, vocab], not a second [batch, seq, vocab] tensor
    return F.mse_loss(student[keep].float(), teacher[keep].float())


def kd_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T)) * T^2``, averaged over positions.

    Args:
        student: ``[batch, seq, vocab]``.
        teacher: ``[batch, seq, vocab]``.
        temperature: ``T`` > 0.
        mask: ``[batch, seq]``, 1 for positions that count; ``None`` counts all.
    """
    if mask is not None:
        student, teacher = student[mask.bool()], teacher[mask.bool()]
    s = F.log_softmax(student.float().flatten(0, -2) / temperature, dim=-1)
    t = F.log_softmax(teacher.float().flatten(0, -2) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def reference_distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor,
    cfg,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``alpha * MLM + (1 - alpha) * KD`` composed from the plain terms (the readable definition).

    Args and returns as `distill_loss`, which computes the same value and gradient with less memory.
    """
    mask = attention_mask if cfg.mask_padding else None
    mlm = mlm_loss(student, labels)
    if cfg.kd_loss == "mse":
        kd = kd_mse(student, teacher, mask)
    else:
        kd = kd_kl(student, teacher, cfg.temperature, mask)
    loss = cfg.alpha * mlm + (1.0 - cfg.alpha) * kd
    return loss, {"mlm": float(mlm.detach()), "kd": float(kd.detach())}


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor,
    cfg,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``alpha * MLM + (1 - alpha) * KD`` of a `DistillConfig`, fused and chunked over positions.

    Equal in value and gradient to `reference_distill_loss`, but no float32 copy of the
    ``[batch, seq, vocab]`` logits is kept for the backward pass: the forward pass walks over chunks
    of positions, and stores only the gradient with respect to the student logits, in their dtype.
    At full XLM-R vocabulary this saves several GiB per batch of 8 x 512 tokens. When no gradient is
    wanted (under ``torch.no_grad()``, as held-out evaluation runs, or for logits that do not require
    one) that gradient is neither allocated nor computed: only chunk-sized temporaries are made.

    Args:
        student: ``[batch, seq, vocab]`` student logits.
        teacher: ``[batch, seq, vocab]`` teacher logits on the same masked batch.
        labels: ``[batch, seq]`` MLM labels (-100: not predicted).
        attention_mask: ``[batch, seq]``.
        cfg: a `DistillConfig` (``alpha``, ``kd_loss``, ``temperature``, ``mask_padding``).

    Returns:
        the loss (scalar) and its parts ``{"mlm": ..., "kd": ...}`` as floats.
    """
    vocab = student.shape[-1]
    counted = attention_mask.bool() if cfg.mask_padding else torch.ones_like(attention_mask, dtype=torch.bool)
    args = (student.reshape(-1, vocab), teacher.detach().reshape(-1, vocab), labels.reshape(-1), counted.reshape(-1),
            float(cfg.alpha), cfg.kd_loss, float(cfg.temperature))
    with torch.autocast(student.device.type, enabled=False):
        if torch.is_grad_enabled() and student.requires_grad:
            loss, mlm, kd = _FusedDistillLoss.apply(*args)
        else:
            with torch.no_grad():
                loss, mlm, kd = _fused_forward(*args, grad=None)
    return loss, {"mlm": float(mlm), "kd": float(kd)}


def _fused_forward(student, teacher, labels, counted, alpha, kind, temperature, grad):
    """``(loss, mlm, kd)`` of `distill_loss` over ``[rows, vocab]`` logits, in chunks of positions; the
    gradient with respect to ``student`` goes into ``grad`` (same shape) when one is given, else it is not
    computed at all."""
    rows, vocab = student.shape  # [rows, vocab]
    n_labels = (labels != -100).sum().clamp(min=1).float()
    n_counted = counted.sum().clamp(min=1).float()
    mlm_sum = torch.zeros((), device=student.device)
    kd_sum = torch.zeros((), device=student.device)
    step = max(1, _CHUNK_ELEMENTS // vocab)
    for start in range(0, rows, step):
        s = student[start : start + step].float()  # [chunk, vocab]
        t = teacher[start : start + step].float()
        y, keep = labels[start : start + step], counted[start : start + step, None].float()
        log_p = F.log_softmax(s, dim=-1)
        picked = y != -100
        target = torch.where(picked, y, torch.zeros_like(y))
        mlm_sum += -(log_p.gather(1, target[:, None]).squeeze(1) * picked).sum()
        if kind == "mse":
            diff = (s - t).mul_(keep)
            kd_sum += diff.square().sum()
        else:
            log_q = F.log_softmax(s / temperature, dim=-1)
            log_t = F.log_softmax(t / temperature, dim=-1)
            kd_sum += (log_t.exp() * (log_t - log_q) * keep).sum() * temperature**2
        if grad is None:
            continue
        g_mlm = log_p.exp_()
        g_mlm[torch.arange(len(y), device=y.device), target] -= 1.0
        g_mlm *= picked[:, None] / n_labels
        if kind == "mse":
            g_kd = diff.mul_(2.0 / (n_counted * vocab))
        else:
            g_kd = (log_q.exp_() - log_t.exp_()).mul_(keep * (temperature / n_counted))
        grad[start : start + step] = (alpha * g_mlm + (1.0 - alpha) * g_kd).to(grad.dtype)
    mlm = mlm_sum / n_labels
    kd = kd_sum / (n_counted * vocab) if kind == "mse" else kd_sum / n_counted
    return alpha * mlm + (1.0 - alpha) * kd, mlm, kd


class _FusedDistillLoss(torch.autograd.Function):
    """Loss and student-logit gradient of ``alpha * CE + (1 - alpha) * KD`` in one chunked pass."""

    @staticmethod
    def forward(ctx, student, teacher, labels, counted, alpha, kind, temperature):
        grad = torch.empty_like(student)  # [rows, vocab], the student's dtype
        loss, mlm, kd = _fused_forward(student, teacher, labels, counted, alpha, kind, temperature, grad)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(mlm, kd)
        return loss, mlm, kd

    @staticmethod
    def backward(ctx, grad_loss, _grad_mlm, _grad_kd):
        (grad,) = ctx.saved_tensors
        # scaled in place: a second [rows, vocab] buffer would double the loss's memory for nothing (a
        # second backward through the same graph then fails on the changed saved tensor, as it should)
        return grad.mul_(grad_loss.to(grad.dtype)), None, None, None, None, None, None
