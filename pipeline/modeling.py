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

__all__ = [
    "TOKENIZER_FILES",
    "base_model",
    "check_model_dir",
    "check_tokenizer",
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
    "safetensors_problem",
    "save",
    "save_output",
    "select",
    "write_metrics",
]

log = logging.getLogger(__name__)

# Files that hold a tokenizer's vocabulary; a folder without any has no tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.txt")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


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


def check_model_dir(path: str | Path, *, trust_remote_code: bool = False, allow_pickle: bool = False,
                    tokenizer: bool = True) -> dict:
    """The raw ``config.json`` of a local model folder, once everything a load needs is there.

    Checks, each a one-line `UsageError` naming the file: ``config.json`` exists, is a JSON object and
    names a supported ``model_type``; no ``auto_map`` asks to run the folder's own code (unless
    ``trust_remote_code``); the weights are safetensors (pickled ``pytorch_model.bin`` only with
    ``allow_pickle``) and no safetensors file is truncated; a tokenizer file exists (transformers 5 would
    otherwise build an empty XLM-R tokenizer that turns every word into ``<unk>``).

    Args:
        path: the folder.
        trust_remote_code: allow a folder whose config or tokenizer config has an ``auto_map``.
        allow_pickle: allow a folder that holds only pickled weights.
        tokenizer: also require tokenizer files.

    Raises:
        UsageError: for the first problem found.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UsageError(f"{path}: {'not a directory' if path.exists() else 'model directory not found'}")
    config = _read_json(path / "config.json", "directory has no config.json (not a Hugging Face model directory)")
    try:
        family_of(config)
    except ValueError as error:
        raise UsageError(f"{path / 'config.json'}: {error}") from None
    tokenizer_config = path / "tokenizer_config.json"
    for file, values in (("config.json", config),
                         ("tokenizer_config.json", _read_json(tokenizer_config) if tokenizer_config.is_file() else {})):
        if values.get("auto_map") and not trust_remote_code:
            raise UsageError(
                f"{path / file}: auto_map asks to run the folder's own Python code, which is off by default; "
                "use a model without it (a spec can opt in with teacher.trust_remote_code: true)"
            )
    _check_weights(path, allow_pickle)
    if tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UsageError(f"{path}: no tokenizer ({', '.join(TOKENIZER_FILES[:3])} or {TOKENIZER_FILES[-1]}); "
                         "save the model's tokenizer into the folder")
    return config


def check_tokenizer(tokenizer, vocab_size: int, where: str | Path) -> None:
    """Refuse a tokenizer that is empty or has ids the model's embeddings do not cover.

    Raises:
        UsageError: when ``tokenizer`` holds only special tokens, or more tokens than ``vocab_size``.
    """
    specials = len(set(tokenizer.all_special_ids))
    if len(tokenizer) <= specials:
        raise UsageError(f"{where}: the tokenizer holds only its {len(tokenizer)} special tokens; "
                         "save the model's real tokenizer into the folder")
    if len(tokenizer) > vocab_size:
        raise UsageError(f"{where}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                         f"{vocab_size}; they do not belong together")


def load_config(name_or_dir: str, *, trust_remote_code: bool = False) -> dict:
    """The ``config.json`` of a local directory or hub id, as a dict (defaults filled in).

    Raises:
        UsageError: when the model cannot be found or its config is unusable.
    """
    name = str(name_or_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        config = _read_json(path / "config.json", "directory has no config.json (not a Hugging Face model directory)")
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
        raise UsageError(f"{name}: cannot load model or tokenizer ({_first_line(error)})") from None
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


def _read_json(file: Path, missing: str | None = None) -> dict:
    """A JSON object file; a one-line `UsageError` naming the file (and line) otherwise."""
    if not file.is_file():
        raise UsageError(f"{file.parent}: {missing}" if missing else f"{file}: not found")
    try:
        value = json.loads(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise UsageError(f"{file}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{file}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value


def _check_weights(path: Path, allow_pickle: bool) -> None:
    """Safetensors weights that are complete, or (opt-in) pickled ones; a `UsageError` otherwise."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        files = [path / shard for shard in shards]
    else:
        files = [path / "model.safetensors"] if (path / "model.safetensors").is_file() else []
    if not files:
        pickled = [name for name in PICKLED_WEIGHTS if (path / name).is_file()]
        if pickled and allow_pickle:
            log.warning("%s: loading pickled weights (%s) as the spec allows", path, pickled[0])
            return
        if pickled:
            raise UsageError(f"{path}: holds only pickled weights ({pickled[0]}), which can run code when loaded; "
                             "convert them to safetensors (a spec can opt in with teacher.allow_pickle: true)")
        raise UsageError(f"{path}: no weights (model.safetensors)")
    for file in files:
        problem = safetensors_problem(file)
        if problem:
            raise UsageError(f"{file}: {problem}")


def safetensors_problem(file: str | Path) -> str | None:
    """What is wrong with a safetensors file's framing (missing, truncated, bad header), or None.

    Reads the 8-byte header length and the JSON header only: a file cut short by a full disk or a
    killed copy is found without loading any tensor.
    """
    file = Path(file)
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes): not a safetensors file"
            length = int.from_bytes(head, "little")
            if length > size - 8:
                return f"truncated ({size} bytes; the header alone needs {length + 8})"
            header = json.loads(handle.read(length))
    except FileNotFoundError:
        return "not found"
    except (OSError, ValueError) as error:
        return f"not a safetensors file ({_first_line(error)})"
    if not isinstance(header, dict):
        return "not a safetensors file (the header is not a JSON object)"
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2]
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        return f"truncated ({size} bytes, the header describes {expected})" if size < expected else (
            f"{size - expected} unexpected bytes after the last tensor")
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
