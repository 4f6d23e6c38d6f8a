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
import os
import shutil
from pathlib import Path

import torch
from torch import nn
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel

from pipeline.errors import UsageError
from pipeline.families import family_of
from pipeline.modeldir import TOKENIZER_FILES, check_model_dir, check_tokenizer, read_json

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
    "safe_kwargs",
    "save",
    "save_output",
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


def safe_kwargs(*, trust_remote_code: bool = False, allow_pickle: bool = False) -> dict:
    """Keyword arguments of every ``from_pretrained`` call: safetensors only and no code from the folder,
    unless a spec opts in (``teacher.allow_pickle``, ``teacher.trust_remote_code``)."""
    return {"trust_remote_code": trust_remote_code, "use_safetensors": None if allow_pickle else True}


def load_config(name_or_dir: str, *, trust_remote_code: bool = False) -> dict:
    """The ``config.json`` of a local directory or hub id, as a dict (defaults filled in).

    Raises:
        UsageError: when the model cannot be found or its config is unusable.
    """
    name = str(name_or_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        config = read_json(path / "config.json", "directory has no config.json (not a Hugging Face model directory)")
        try:
            family_of(config)
        except ValueError as error:
            raise UsageError(f"{path / 'config.json'}: {error}") from None
    elif path.exists() or path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise UsageError(f"{name}: {'not a directory' if path.exists() else 'model directory not found'}")
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code).to_dict()
    except (OSError, ValueError) as error:
        raise UsageError(f"{name_or_dir}: not a model directory or hub id ({_first_line(error)})") from None


def load(name_or_dir: str | Path, *, trust_remote_code: bool = False,
         allow_pickle: bool = False) -> tuple[PreTrainedModel, object]:
    """Load ``AutoModelForMaskedLM`` and ``AutoTokenizer`` from a directory or hub id, checked.

    A local directory passes `check_model_dir` first; every weight of the masked-LM class must be in
    the checkpoint (none initialised at random), and the tokenizer must pass `check_tokenizer`.

    Args:
        name_or_dir: a local model directory or a hub id.
        trust_remote_code: let the folder run its own code (a spec's ``teacher.trust_remote_code``).
        allow_pickle: accept pickled ``pytorch_model.bin`` weights (a spec's ``teacher.allow_pickle``).

    Raises:
        UsageError: when the model or its tokenizer cannot be found or used, or the family is not supported.
    """
    name = str(name_or_dir)
    if Path(name).expanduser().is_dir():
        check_model_dir(name, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    try:
        family_of(load_config(name, trust_remote_code=trust_remote_code))
    except ValueError as error:
        raise UsageError(f"{name}: {error}") from None
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            name, output_loading_info=True, **safe_kwargs(trust_remote_code=trust_remote_code,
                                                          allow_pickle=allow_pickle))
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        hint = ("; only safetensors weights are read (a spec can opt in with teacher.allow_pickle: true)"
                if not allow_pickle and "safetensors" in str(error) else "")
        raise UsageError(f"{name}: cannot load model or tokenizer ({_first_line(error)}){hint}") from None
    missing = [key for key in info.get("missing_keys", ()) if not key.endswith("position_ids")]
    if missing:
        raise UsageError(f"{name}: {len(missing)} weights of {type(model).__name__} are not in the checkpoint "
                         f"(first: {sorted(missing)[0]}); it is not a masked-LM checkpoint of this architecture")
    check_tokenizer(tokenizer, model.config.vocab_size, name)
    return model, tokenizer


def load_tokenizer(name_or_dir: str | Path, *, vocab_size: int | None = None, trust_remote_code: bool = False):
    """``AutoTokenizer`` from a directory or hub id, checked with `check_tokenizer`.

    Args:
        name_or_dir: a local directory (which must hold tokenizer files) or a hub id.
        vocab_size: the model's vocabulary size the tokenizer must fit; None skips that check.
        trust_remote_code: let the folder run its own code.

    Raises:
        UsageError: when no usable tokenizer is found there.
    """
    path = Path(str(name_or_dir)).expanduser()
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UsageError(f"{path}: no tokenizer ({', '.join(TOKENIZER_FILES[:3])} or {TOKENIZER_FILES[-1]})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_dir), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UsageError(f"{name_or_dir}: no tokenizer found ({_first_line(error)})") from None
    check_tokenizer(tokenizer, vocab_size if vocab_size is not None else len(tokenizer), name_or_dir)
    return tokenizer


def save(model: PreTrainedModel, tokenizer, out: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` as a Hugging Face directory that the Auto classes load."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_output(out: str | Path, model: PreTrainedModel, tokenizer, metrics: dict) -> Path:
    """Write model, tokenizer and ``metrics.json`` to ``out`` all at once: into a hidden folder beside it
    that is renamed into place when complete, so a crash or a kill never leaves a half-written ``out``.

    ``out`` must not exist or be an empty folder (the command line checks this before any work).
    """
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save(model, tokenizer, tmp)
        write_metrics(tmp, metrics)
        if out.is_dir():
            out.rmdir()  # empty, as checked; a folder with files in it raises and is left alone
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
