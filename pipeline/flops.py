"""Compute in floating-point operations, from a model's config and what a stage reports it processed.

Used to give a baseline the same compute as a compressed student: a model trained from scratch gets the
FLOPs its compression path spent, teacher forward passes and held-out evaluations included.

A forward pass of a BERT / XLM-R masked-LM model costs, per token of a row of ``seq_len`` tokens,
``2 * (layers * (4 h^2 + 2 h f + 2 seq_len h) + h^2 + h V)`` FLOPs (a multiply-add is 2): the Q, K, V and
output projections, the FFN, the attention scores and their weighted sum, the MLM head's transform
and its decoder over the vocabulary. Embedding lookups, biases, norms and softmaxes are left out
(under 2% at these sizes). A training step costs 3 forward passes (forward, and a backward of twice
the forward's cost).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["TRAIN_FACTOR", "distill_flops", "forward_flops", "heldout_share", "mlm_training_flops", "prune_flops",
           "tokens_for_flops"]

TRAIN_FACTOR = 3  # a training step: one forward pass and a backward pass of twice its cost


def forward_flops(config: Mapping[str, Any], tokens: float, seq_len: int) -> float:
    """FLOPs of a forward pass over ``tokens`` tokens in rows of ``seq_len`` (see the module's formula)."""
    h, f = int(config["hidden_size"]), int(config["intermediate_size"])
    layers, vocab = int(config["num_hidden_layers"]), int(config["vocab_size"])
    per_token = layers * (4 * h * h + 2 * h * f + 2 * seq_len * h) + h * h + h * vocab
    return 2.0 * per_token * tokens


def mlm_training_flops(config: Mapping[str, Any], metrics: Mapping[str, Any], seq_len: int) -> float:
    """FLOPs of masked-LM training (`pipeline.adapt`): training steps and held-out passes.

    ``metrics``: the stage's metrics (``tokens``, ``heldout_evals``, ``heldout_tokens``).
    """
    heldout = float(metrics.get("heldout_evals") or 0) * float(metrics.get("heldout_tokens") or 0)
    return (TRAIN_FACTOR * forward_flops(config, float(metrics.get("tokens") or 0), seq_len)
            + forward_flops(config, heldout, seq_len))


def distill_flops(student: Mapping[str, Any], teacher: Mapping[str, Any], metrics: Mapping[str, Any],
                  seq_len: int) -> float:
    """FLOPs of a distillation (`pipeline.distill`): the student trains and the teacher runs forward on
    every training batch, and both run forward on every held-out pass."""
    trained = float(metrics.get("tokens") or 0)
    heldout = float(metrics.get("heldout_evals") or 0) * float(metrics.get("heldout_tokens") or 0)
    return (TRAIN_FACTOR * forward_flops(student, trained, seq_len) + forward_flops(teacher, trained, seq_len)
            + forward_flops(student, heldout, seq_len) + forward_flops(teacher, heldout, seq_len))


def prune_flops(model: Mapping[str, Any], metrics: Mapping[str, Any], seq_len: int) -> float:
    """FLOPs of the pruning importance pass (`pipeline.prune`): forward and backward over its positions."""
    return TRAIN_FACTOR * forward_flops(model, float(metrics.get("positions") or 0), seq_len)


def tokens_for_flops(config: Mapping[str, Any], flops: float, seq_len: int) -> float:
    """How many tokens masked-LM training of ``config`` can train on for ``flops`` (held-out passes aside)."""
    return flops / (TRAIN_FACTOR * forward_flops(config, 1.0, seq_len))


def heldout_share(student: Mapping[str, Any], teacher: Mapping[str, Any], cfg: Any, heldout_rows: int,
                  steps: int | None = None) -> float:
    """The share of a distillation's compute that its held-out evaluations take.

    Every ``cfg.eval_every`` steps (and once before the first) teacher and student run forward over
    ``min(heldout_rows, cfg.heldout_rows)`` rows; a training step trains the student on ``batch_size x
    grad_accum`` rows and runs the teacher forward on them. Rows count as ``max_length`` tokens (long
    documents fill them). ``steps`` None: a run long enough that the first evaluation does not count.

    Args:
        student, teacher: the configs of the two models.
        cfg: a `pipeline.config.DistillConfig`.
        heldout_rows: rows of held-out text there are (e.g. ``data.heldout.max_lines``).
        steps: the run's length in steps.
    """
    rows = heldout_rows if cfg.heldout_rows is None else min(heldout_rows, cfg.heldout_rows)
    seq = cfg.max_length
    per_step = (TRAIN_FACTOR * forward_flops(student, 1.0, seq) + forward_flops(teacher, 1.0, seq)) * \
        cfg.batch_size * cfg.grad_accum * seq
    per_eval = (forward_flops(student, 1.0, seq) + forward_flops(teacher, 1.0, seq)) * rows * seq
    if steps is None:
        train, evals = per_step * cfg.eval_every, 1.0
    else:
        train, evals = per_step * steps, -(-steps // cfg.eval_every) + 1.0
    return evals * per_eval / (train + evals * per_eval)
