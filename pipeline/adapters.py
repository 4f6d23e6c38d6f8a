"""Bottleneck adapters and task heads on a Hugging Face encoder (BERT or XLM-R), our own implementation.

AdapterHub's ``adapters`` (what the paper's scripts used) does not install beside transformers 5, so the
paper's default adapter is rebuilt here: the ``seq_bn`` (Pfeiffer) configuration, one bottleneck after
each layer's output block with ReLU and reduction factor ``r`` (bottleneck width ``hidden_size // r``).
Placement, as AdapterHub does it inside the wrapped output block of each layer::

    h = LayerNorm(dropout(dense(ffn_hidden)) + x)      # the layer's own output block
    h = h + up(relu(down(h)))                          # the adapter, residual taken after the LayerNorm
    out = LayerNorm(h + x)                             # the block's LayerNorm once more

Heads follow AdapterHub's defaults too: classification = first-token vector -> dropout -> dense -> tanh
-> dropout -> linear; tagging = dropout -> linear on every position.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from pipeline import modeling

__all__ = [
    "AdaptedOutput",
    "BottleneckAdapter",
    "TaskModel",
    "add_adapters",
    "build_task_model",
    "encoder_layers",
]


class BottleneckAdapter(nn.Module):
    """``x + up(relu(down(x)))`` with ``down: hidden -> hidden // reduction_factor``.

    Args:
        hidden_size: width of the encoder.
        reduction_factor: hidden size divided by the bottleneck width (paper: 16; topic: 4).
    """

    def __init__(self, hidden_size: int, reduction_factor: int):
        super().__init__()
        if reduction_factor < 1:
            raise ValueError(f"reduction_factor must be >= 1, got {reduction_factor}")
        bottleneck = max(1, hidden_size // reduction_factor)
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        for linear in (self.down, self.up):  # AdapterHub's "bert" init
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [batch, seq, hidden_size]
        return hidden + self.up(torch.relu(self.down(hidden)))


class AdaptedOutput(nn.Module):
    """A layer's output block (``dense``, ``dropout``, ``LayerNorm``) with an adapter inside (seq_bn)."""

    def __init__(self, block: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.block = block
        self.adapter = adapter

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        # hidden_states: [batch, seq, intermediate_size]; input_tensor: [batch, seq, hidden_size]
        hidden = self.block.dropout(self.block.dense(hidden_states))
        hidden = self.block.LayerNorm(hidden + input_tensor)
        hidden = self.adapter(hidden)
        return self.block.LayerNorm(hidden + input_tensor)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT or XLM-R model (base model or one with a head).

    Raises:
        ValueError: for a module without a Hugging Face config or of an unsupported family.
    """
    if not hasattr(model, "config"):
        raise ValueError(f"{type(model).__name__}: not a Hugging Face model (only BERT and XLM-R are supported)")
    return modeling.layers(model)


def add_adapters(model: nn.Module, reduction_factor: int) -> list[BottleneckAdapter]:
    """Wrap every layer's output block with a fresh adapter, in place; returns the adapters."""
    adapters = []
    for index, layer in enumerate(encoder_layers(model)):
        block = layer.output
        if isinstance(block, AdaptedOutput):
            raise ValueError(f"layer {index} already has an adapter")
        if not all(hasattr(block, name) for name in ("dense", "dropout", "LayerNorm")):
            raise ValueError(f"layer {index}: output block {type(block).__name__} lacks dense/dropout/LayerNorm")
        adapter = BottleneckAdapter(block.dense.out_features, reduction_factor)
        layer.output = AdaptedOutput(block, adapter)
        adapters.append(adapter)
    return adapters


class ClassificationHead(nn.Module):
    """Text vector -> dropout -> dense -> tanh -> dropout -> linear (AdapterHub's 2-layer head).

    The text vector is the first token's (``pooling="first"``, the paper's) or the mean over the real
    tokens (``"mean"``): a model pretrained with MLM alone never trains its first position to sum up a
    text, and with a few hundred labelled texts fine-tuning may not teach it to.
    """

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, pooling: str = "first"):
        super().__init__()
        if pooling not in ("first", "mean"):
            raise ValueError(f"unknown pooling {pooling!r} (first or mean)")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # hidden: [batch, seq, hidden_size], attention_mask: [batch, seq] -> logits [batch, num_labels]
        if self.pooling == "first":
            x = hidden[:, 0]
        else:
            weights = (attention_mask if attention_mask is not None else hidden.new_ones(hidden.shape[:2])).to(hidden.dtype)
            x = (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
        x = self.dropout(torch.tanh(self.dense(self.dropout(x))))
        return self.out(x)


class TokenHead(nn.Module):
    """Dropout -> linear at every position."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # hidden: [batch, seq, hidden_size] -> logits [batch, seq, num_labels]
        return self.out(self.dropout(hidden))


class TaskModel(nn.Module):
    """An encoder plus a task head; ``forward`` returns logits."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden, attention_mask)


def build_task_model(
    model_dir: str, num_labels: int, kind: str, method: str = "adapter", reduction_factor: int = 16,
    pooling: str = "first",
) -> TaskModel:
    """Load the encoder of ``model_dir`` and put a task head on it.

    Args:
        model_dir: a Hugging Face model directory (any head; only the encoder is used).
        num_labels: classes or tags.
        kind: ``classification`` (one label per text) or ``tokens`` (one tag per position).
        method: ``adapter`` (encoder frozen; adapters and head train) or ``finetune`` (all trains).
        reduction_factor: adapter bottleneck reduction (``adapter`` only).
        pooling: ``first`` or ``mean`` (`ClassificationHead`; ``classification`` only).

    Returns:
        The model in train mode; parameters that must not train have ``requires_grad=False``.
    """
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from pipeline.modeling import safe_kwargs

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused MLM head weights are expected, not news
    try:
        encoder = AutoModel.from_pretrained(model_dir, add_pooling_layer=False, **safe_kwargs())
    finally:
        hf_logging.set_verbosity(verbosity)
    if method == "adapter":
        encoder.requires_grad_(False)
        add_adapters(encoder, reduction_factor)  # new modules: trainable
    elif method != "finetune":
        raise ValueError(f"unknown method {method!r} (adapter or finetune)")
    config = encoder.config
    dropout = getattr(config, "hidden_dropout_prob", 0.1)
    if kind == "classification":
        head = ClassificationHead(config.hidden_size, num_labels, dropout, pooling)
    else:
        head = TokenHead(config.hidden_size, num_labels, dropout)
    logging.getLogger(__name__).debug(
        "task model: %d trainable of %d parameters",
        sum(p.numel() for p in encoder.parameters() if p.requires_grad) + sum(p.numel() for p in head.parameters()),
        sum(p.numel() for p in encoder.parameters()),
    )
    model = TaskModel(encoder, head)
    model.train()
    return model
