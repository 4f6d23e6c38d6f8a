"""Loading, saving and family-specific access to BERT and XLM-R masked-LM models.

Stage code never spells ``model.roberta`` or ``model.cls.predictions``: it asks this module for the
encoder, the layer stack, the embeddings or the MLM head, found through the family table
(`pipeline.families`). Weight surgery slices tensors with `select`, builds a fresh model from an
edited config and loads the edited state dict into it (`rebuild`), so the decoder stays tied to the
word embeddings exactly as the stock class ties it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel

from pipeline.errors import UsageError
from pipeline.families import family_of

__all__ = [
    "base_model",
    "embeddings",
    "family",
    "fresh",
    "layers",
    "lm_head",
    "load",
    "load_config",
    "load_tokenizer",
    "rebuild",
    "save",
    "select",
    "write_metrics",
]

log = logging.getLogger(__name__)


def family(model: PreTrainedModel) -> str:
    """``"xlmr"`` or ``"bert"`` for a loaded model."""
    return family_of(model.config).name


def base_model(model: PreTrainedModel) -> nn.Module:
    """The encoder (``model.roberta`` or ``model.bert``); a model without a head is its own encoder."""
    return getattr(model, family_of(model.config).encoder, model)


def embeddings(model: PreTrainedModel) -> nn.Module:
    """The embedding block (word, position, token type, LayerNorm)."""
    return base_model(model).embeddings


def layers(model: PreTrainedModel) -> nn.ModuleList:
    """The transformer layer stack."""
    return base_model(model).encoder.layer


def lm_head(model: PreTrainedModel) -> nn.Module:
    """The MLM head: has ``decoder`` (tied to the word embeddings) and ``bias``."""
    head = model
    for name in family_of(model.config).lm_head.split("."):
        head = getattr(head, name)
    return head


def load_config(name_or_dir: str) -> dict:
    """The ``config.json`` of a local directory or hub id, as a dict.

    Raises:
        UsageError: when the model cannot be found.
    """
    name = str(name_or_dir)
    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise UsageError(f"{name}: directory has no config.json (not a Hugging Face model directory)")
    if not path.exists() and (path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
        raise UsageError(f"{name}: model directory not found")
    try:
        return AutoConfig.from_pretrained(name).to_dict()
    except (OSError, ValueError) as error:
        raise UsageError(f"{name_or_dir}: not a model directory or hub id ({_first_line(error)})") from None


def load(name_or_dir: str | Path) -> tuple[PreTrainedModel, object]:
    """Load ``AutoModelForMaskedLM`` and ``AutoTokenizer`` from a directory or hub id.

    Raises:
        UsageError: when the model or its tokenizer cannot be found, or the family is not supported.
    """
    name = str(name_or_dir)
    config = load_config(name)
    try:
        family_of(config)
    except ValueError as error:
        raise UsageError(f"{name}: {error}") from None
    try:
        model = AutoModelForMaskedLM.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise UsageError(f"{name}: cannot load model or tokenizer ({_first_line(error)})") from None
    return model, tokenizer


def load_tokenizer(name_or_dir: str | Path):
    """``AutoTokenizer`` from a directory or hub id.

    Raises:
        UsageError: when no tokenizer is found there.
    """
    try:
        return AutoTokenizer.from_pretrained(str(name_or_dir))
    except (OSError, ValueError) as error:
        raise UsageError(f"{name_or_dir}: no tokenizer found ({_first_line(error)})") from None


def save(model: PreTrainedModel, tokenizer, out: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` as a Hugging Face directory that the Auto classes load."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_metrics(out: str | Path, metrics: dict) -> Path:
    """Write ``metrics`` as ``out/metrics.json``."""
    path = Path(out) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def fresh(model: PreTrainedModel, **config_changes) -> PreTrainedModel:
    """A newly initialised model of ``model``'s class and dtype with ``config_changes`` applied.

    The weights are the stock Hugging Face initialisation drawn from torch's global random state:
    seed it first for repeatable weights. The model is in training mode, as the constructor leaves it.

    Args:
        model: the model whose class, config and dtype are reused.
        config_changes: new config values, e.g. ``num_hidden_layers=6``.
    """
    config = model.config.__class__.from_dict({**model.config.to_dict(), **config_changes})
    return type(model)(config).to(next(model.parameters()).dtype)


def rebuild(model: PreTrainedModel, state_dict: dict[str, torch.Tensor], **config_changes) -> PreTrainedModel:
    """A fresh model of ``model``'s class with ``config_changes`` applied, holding ``state_dict``.

    The stock constructor ties the decoder to the word embeddings, so a state dict whose tied entries
    were edited together keeps the tie. Dtype and training mode follow ``model``.

    Args:
        model: the model whose class, config and dtype are reused.
        state_dict: complete weights for the new config (tied keys may appear twice, equal).
        config_changes: new config values, e.g. ``hidden_size=16``.

    Raises:
        RuntimeError: when ``state_dict`` does not match the new config.
    """
    new = fresh(model, **config_changes)
    new.load_state_dict(state_dict, strict=True)
    new.tie_weights()
    new.train(model.training)
    return new


def select(tensor: torch.Tensor, dims: tuple[int, ...], index: torch.Tensor) -> torch.Tensor:
    """The entries ``index`` of ``tensor`` along each of ``dims``, as a new contiguous tensor.

    The one slicing rule of weight surgery: pruning keeps neurons and head dimensions, truncation
    the first ``K`` hidden dimensions, trimming the kept vocabulary ids.

    Args:
        tensor: any weight, e.g. ``[intermediate_size, hidden_size]``; it is not modified.
        dims: the dimensions to index, each of the same size; ``()`` returns a plain copy.
        index: 1-D ``[k]`` positions to keep, in the order they should appear.

    Returns:
        A detached tensor with size ``k`` along every dimension in ``dims``.
    """
    out = tensor.detach()
    index = index.to(out.device)
    for dim in dims:
        out = out.index_select(dim, index)  # a fresh contiguous copy
    return out if dims else out.clone(memory_format=torch.contiguous_format)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
