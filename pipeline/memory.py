"""Peak memory of every stage, estimated from configs and settings alone (no torch, no transformers).

The dry run and the preflight print these estimates at a spec's batch, sequence length and precision
(`search.memory`); ``benchmarks/real_size.py`` prints them beside the measured peaks. An estimate is
what one step of the stage holds, summed as if all of it were held at once, in bytes (meant as an upper
estimate, but at XLM-R base and mBERT sizes on the CPU adaptation and truncation measured up to 24%
above it; see benchmarks/RESULTS.md, Real sizes):

- ``weights``: the float32 weights of every model the stage holds (teacher and student together in a
  distillation; `pipeline.sizes` counts them exactly), and under bf16 autocast the bf16 copy of every
  weight a matmul of the trained model casts and keeps for the backward pass;
- ``gradients`` and ``optimizer``: float32 gradients of the trained weights and AdamW's two moments;
- ``activations``: what the backward pass keeps, per layer and token ``7 e h + 2 e f + 10 h`` bytes
  (``e``: 2 under bf16 autocast, 4 in float32; Q, K, V and the inputs of the projections in ``e``
  bytes, LayerNorm inputs in float32, two dropout masks), and on the CPU the attention matrices of the
  math attention kernel (``12 a s`` per token: scores, dropout mask and output in float32; CUDA's
  memory-efficient kernel keeps none); the embeddings and the MLM head's transform come on top;
- ``logits``: the full-vocabulary outputs and their loss. A distillation holds student and teacher
  logits ``[batch, seq, vocab]`` and the gradient buffer of the fused loss, plus the float32
  temporaries of one chunk of it (`CHUNK_ELEMENTS`, `pipeline.losses`); adaptation and pruning run the
  head at the masked positions only, one chunk of them at a time (`pipeline.losses.head_mlm_loss`).

The weights of the best held-out checkpoint are not on the device: on a GPU they are in CPU memory,
on a CPU in a file (`pipeline.training`). Vocabulary trimming runs on the CPU. A model rebuilt at a
smaller shape (trimming, truncation, pruning after its pass) holds for a moment the source model, the
tensors selected from it, the new model and the decoder its constructor allocates before tying it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.families import max_positions
from pipeline.sizes import config_parameters

__all__ = [
    "CHUNK_ELEMENTS", "Estimate", "GIB", "adapt", "distill", "evaluate", "format_bytes", "largest_batch",
    "parse_size", "prune", "rebuild",
]

# float32 elements of one chunk of the full-vocabulary losses (`pipeline.losses`): 256 MiB
CHUNK_ELEMENTS = 2**26
GIB = 2**30
_ADAMW_MOMENTS = 2
_FUSED_TEMPORARIES = 7  # float32 chunk tensors alive at once in the fused distillation loss
_HEAD_TEMPORARIES = 3  # float32 chunk tensors of a cross-entropy: its input, log-probabilities, gradient


@dataclass(frozen=True)
class Estimate:
    """One stage's estimated peak, in bytes, with what it is made of (see the module's notes)."""

    stage: str
    batch: int
    seq_len: int
    precision: str  # "bf16" (autocast on CUDA) or "fp32"
    weights: int
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    logits: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    @property
    def fixed(self) -> int:
        """What does not grow with the batch: weights, gradients and optimiser state."""
        return self.weights + self.gradients + self.optimizer


def _params(config: Mapping[str, Any]) -> int:
    return config_parameters(config)


def _matmul_params(config: Mapping[str, Any]) -> int:
    """Weights that matmuls read (what autocast casts): all but the position and token-type tables."""
    h = int(config["hidden_size"])
    tables = (int(config["max_position_embeddings"]) + int(config.get("type_vocab_size", 2))) * h
    return _params(config) - tables


def _length(config: Mapping[str, Any], max_length: int) -> int:
    return min(int(max_length), max_positions(config))


def _activations(config: Mapping[str, Any], batch: int, seq: int, element: int, device: str, *,
                 dropout: bool, head_rows: int) -> int:
    """Bytes the backward pass keeps: every layer, the embeddings and the MLM head's transform at
    ``head_rows`` positions."""
    h, f = int(config["hidden_size"]), int(config["intermediate_size"])
    heads, layers = int(config["num_attention_heads"]), int(config["num_hidden_layers"])
    masks = 2 * h if dropout else 0
    per_token = 7 * element * h + 2 * element * f + 8 * h + masks
    if device == "cpu":
        per_token += (12 if dropout else 4) * heads * seq
    tokens = batch * seq
    embeddings = tokens * (4 * h + (h if dropout else 0))
    head = head_rows * (3 * element * h + 4 * h)
    return layers * tokens * per_token + embeddings + head


def _head_chunk(vocab: int, rows: int, element: int) -> int:
    """One chunk of `pipeline.losses.head_mlm_loss`: its logits (and their gradient) and float32 temporaries."""
    chunk_rows = min(rows, max(1, CHUNK_ELEMENTS // vocab))
    return chunk_rows * vocab * (2 * element + 4 * _HEAD_TEMPORARIES)


def _masked_rows(batch: int, seq: int, probability: float) -> int:
    return max(1, math.ceil(batch * seq * probability))


def _element(bf16: bool, device: str) -> int:
    return 2 if bf16 and device == "cuda" else 4


def adapt(config: Mapping[str, Any], cfg: Any, device: str, batch: int | None = None) -> Estimate:
    """Masked-LM training of ``config`` with an `AdaptConfig` ``cfg`` on ``device`` (``cuda`` or ``cpu``)."""
    batch = cfg.batch_size if batch is None else batch
    seq, element = _length(config, cfg.max_length), _element(cfg.bf16, device)
    params, rows = _params(config), _masked_rows(batch, seq, cfg.mlm_probability)
    copies = 2 * _matmul_params(config) if element == 2 else 0
    return Estimate("adapt", batch, seq, "bf16" if element == 2 else "fp32", weights=4 * params + copies,
                    gradients=4 * params, optimizer=4 * _ADAMW_MOMENTS * params,
                    activations=_activations(config, batch, seq, element, device, dropout=True, head_rows=rows),
                    logits=_head_chunk(int(config["vocab_size"]), rows, element))


def distill(student: Mapping[str, Any], teacher: Mapping[str, Any], cfg: Any, device: str,
            batch: int | None = None, stage: str = "distill") -> Estimate:
    """One distillation step of ``student`` from ``teacher`` with a `DistillConfig` ``cfg``: both models'
    weights, the student's training state and activations, both models' logits, the fused loss."""
    batch = cfg.batch_size if batch is None else batch
    seq, element = min(_length(student, cfg.max_length), _length(teacher, cfg.max_length)), _element(cfg.bf16, device)
    params = _params(student)
    vocab, tokens = int(student["vocab_size"]), batch * seq
    copies = 2 * _matmul_params(student) if element == 2 else 0
    chunk = min(tokens, max(1, CHUNK_ELEMENTS // vocab)) * vocab
    # the teacher's forward pass keeps nothing; its largest temporaries are one layer's FFN and attention
    t_h, t_f = int(teacher["hidden_size"]), int(teacher["intermediate_size"])
    teacher_pass = tokens * (element * t_f + 4 * 4 * t_h)
    if device == "cpu":
        teacher_pass += 8 * int(teacher["num_attention_heads"]) * seq * tokens
    logits = 3 * tokens * vocab * element + 4 * _FUSED_TEMPORARIES * chunk
    return Estimate(stage, batch, seq, "bf16" if element == 2 else "fp32",
                    weights=4 * (params + _params(teacher)) + copies, gradients=4 * params,
                    optimizer=4 * _ADAMW_MOMENTS * params,
                    activations=_activations(student, batch, seq, element, device, dropout=True, head_rows=tokens)
                    + teacher_pass, logits=logits)


def prune(config: Mapping[str, Any], cfg: Any, device: str, batch: int | None = None,
          target: Mapping[str, Any] | None = None) -> Estimate:
    """The Taylor importance pass of `pipeline.prune` with a `PruneConfig` ``cfg``: gradients of the FFN
    input layers only, no optimiser, no dropout, the head at the masked positions in chunks. Given the
    pruned ``target`` config, on the CPU the larger of the pass and the model's `rebuild` after it (on a
    GPU the rebuild is in host memory)."""
    if target is not None and device == "cpu":
        return max(prune(config, cfg, device, batch), rebuild(config, target, "prune"), key=lambda e: e.total)
    batch = cfg.batch_size if batch is None else batch
    seq, element = _length(config, cfg.max_length), _element(getattr(cfg, "bf16", False), device)
    h, f, layers = int(config["hidden_size"]), int(config["intermediate_size"]), int(config["num_hidden_layers"])
    rows = _masked_rows(batch, seq, 0.15)
    copies = 2 * _matmul_params(config) if element == 2 else 0
    return Estimate("prune", batch, seq, "bf16" if element == 2 else "fp32",
                    weights=4 * _params(config) + copies, gradients=4 * layers * (h * f + f),
                    activations=_activations(config, batch, seq, element, device, dropout=False, head_rows=rows),
                    logits=_head_chunk(int(config["vocab_size"]), rows, element))


def rebuild(source: Mapping[str, Any], target: Mapping[str, Any], stage: str = "trim_vocab") -> Estimate:
    """A model rebuilt at a smaller shape (`pipeline.modeling.rebuild`, on the CPU): vocabulary trimming,
    hidden-size truncation, and pruning after its pass. It holds the source model, the target's tensors
    selected from it, the new model, and the output decoder that the new model's constructor allocates
    before it ties it to the word embeddings."""
    h, vocab = int(target["hidden_size"]), int(target["vocab_size"])
    return Estimate(stage, 0, 0, "fp32", weights=4 * (_params(source) + 2 * _params(target) + vocab * h))


def evaluate(config: Mapping[str, Any], training: Any, method: str, device: str, batch: int | None = None,
             num_labels: int = 32) -> Estimate:
    """Training a task on the encoder of ``config`` (float32): ``method`` ``adapter`` trains bottleneck
    adapters (and the head) through a frozen encoder, ``finetune`` every weight. Every row is taken at
    the full ``max_length``; a batch is padded to its longest text, so short texts need less."""
    batch = training.batch_size if batch is None else batch
    seq = _length(config, training.max_length)
    h, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    encoder = _params(config) - (h * h + 3 * h + int(config["vocab_size"]))  # no MLM head
    head = h * h + h + num_labels * (h + 1)
    bottleneck = max(1, h // int(training.reduction_factor))
    trained = encoder + head if method == "finetune" else layers * (2 * h * bottleneck + bottleneck + h) + head
    return Estimate("evaluate", batch, seq, "fp32", weights=4 * (encoder + head), gradients=4 * trained,
                    optimizer=4 * _ADAMW_MOMENTS * trained,
                    activations=_activations(config, batch, seq, 4, device, dropout=True, head_rows=0))


def largest_batch(estimate_at, available: int, batch: int) -> int:
    """The largest batch up to ``batch`` whose estimate fits ``available`` bytes (0: not even 1).

    Args:
        estimate_at: batch -> `Estimate` (grows with the batch).
    """
    low, high = 0, batch
    while low < high:
        middle = (low + high + 1) // 2
        if estimate_at(middle).total <= available:
            low = middle
        else:
            high = middle - 1
    return low


_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
          "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}


def parse_size(text: str) -> int:
    """Bytes of ``80GiB``, ``80G`` (binary), ``24GB`` (decimal), ``16000MiB`` or a plain byte count.

    Raises:
        ValueError: for anything else.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match and match[2].lower()
    if not match or unit not in _UNITS or float(match[1]) <= 0:
        raise ValueError(f"{text!r}: expected a size such as 80GiB, 24GB or 16000MiB")
    return int(float(match[1]) * _UNITS[unit])


def format_bytes(size: float) -> str:
    """``12.3 GiB``, ``845 MiB`` or ``1.25 MiB``."""
    if size >= GIB:
        return f"{size / GIB:.1f} GiB"
    return f"{size / 2**20:.0f} MiB" if size >= 10 * 2**20 else f"{size / 2**20:.2f} MiB"
