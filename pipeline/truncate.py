"""Stage 3a: truncate the hidden size to ``K`` by keeping the first ``K`` entries of every tensor.

``method="svd"`` first replaces every matrix by its best rank-``K`` approximation, then slices (the
paper's ablated alternative). The second distillation that follows is the trial's business
(`pipeline.trial`), so this stage stays a pure weight edit.
"""

from __future__ import annotations

import argparse
import logging

import torch

from pipeline import modeling
from pipeline.errors import UsageError
from pipeline.families import Family, family_of

__all__ = ["truncate_hidden", "add_arguments", "main"]

log = logging.getLogger(__name__)


def _hidden_dims(name: str, tensor: torch.Tensor, family: Family) -> tuple[int, ...]:
    """The dimensions of a parameter that have the hidden size (by its role, not its shape)."""
    if name in family.vocab_tensors:
        return (1,) if tensor.ndim == 2 else ()  # word embeddings and decoder [V, H]; biases [V]
    if tensor.ndim == 1:
        # the FFN-in bias has F entries; every other bias and LayerNorm vector is hidden-sized
        return () if name.endswith("intermediate.dense.bias") else (0,)
    if "embeddings" in name or name.endswith("intermediate.dense.weight"):
        return (1,)  # [positions or token types, H], [F, H]
    if name.endswith("output.dense.weight") and "attention" not in name:
        return (0,)  # [H, F]
    return (0, 1)  # [H, H]


def _low_rank(weight: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(weight.dtype)


def truncate_hidden(model, tokenizer, hidden_size: int, method: str = "first"):
    """Shrink ``hidden_size`` by slicing every tensor to its first ``hidden_size`` entries.

    Args:
        model: a BERT or XLM-R ``...ForMaskedLM``.
        tokenizer: returned unchanged.
        hidden_size: new hidden size ``K``, at most the current one and divisible by the head count.
        method: ``"first"`` (slice) or ``"svd"`` (rank-``K`` approximation of each matrix, then slice).

    Returns:
        ``(model, tokenizer)``; the model is a new object with ``config.hidden_size == K``.

    Raises:
        UsageError: for a ``K`` that is larger than the model's or not divisible by the head count.
    """
    config = model.config
    heads = config.num_attention_heads
    if hidden_size > config.hidden_size or hidden_size < heads:
        raise UsageError(f"hidden size {hidden_size} must be between {heads} and the model's {config.hidden_size}")
    if hidden_size % heads:
        raise UsageError(f"hidden size {hidden_size} is not divisible by num_attention_heads={heads}")
    if method not in ("first", "svd"):
        raise UsageError(f"truncation method {method!r} is not one of first, svd")
    family = family_of(config)
    first = torch.arange(hidden_size)  # [K]
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if method == "svd" and tensor.ndim == 2 and "position" not in name and "token_type" not in name:
            tensor = _low_rank(tensor, hidden_size)
        state[name] = modeling.select(tensor, _hidden_dims(name, tensor, family), first)
    new = modeling.rebuild(model, state, hidden_size=hidden_size)
    log.info("truncated hidden size %d -> %d (%s)", config.hidden_size, hidden_size, method)
    return new, tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--hidden", type=int, required=True, help="new hidden size")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--method", choices=("first", "svd"), default="first")


def main(args: argparse.Namespace) -> int:
    model, tokenizer = modeling.load(args.model)
    model, tokenizer = truncate_hidden(model, tokenizer, args.hidden, args.method)
    modeling.save_output(args.out, model, tokenizer, {"params": model.num_parameters(), "hidden_size": args.hidden})
    return 0
