"""What a local model folder must hold before anything loads it, checked without torch.

Loading a broken folder with transformers 5 ends in a traceback at best (no ``config.json``, a
truncated safetensors file, an unknown ``model_type``) and in silent nonsense at worst: a folder
without tokenizer files gets an XLM-R tokenizer of 5 special tokens, every word becomes ``<unk>``, and
an evaluation still reports a score. `check_model_dir` finds each of these first, with one line naming
the file; `check_tokenizer` checks a loaded tokenizer against the model's vocabulary. Nothing here
imports torch or transformers, so a spec check (`search.spec`) uses the same rules as the loaders
(`pipeline.modeling`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.families import family_of

__all__ = ["PICKLED_WEIGHTS", "TOKENIZER_FILES", "check_model_dir", "check_tokenizer", "read_json",
           "safetensors_problem"]

log = logging.getLogger(__name__)

# Files that hold a tokenizer's vocabulary; a folder without any has no tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.txt")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_dir(path: str | Path, *, trust_remote_code: bool = False, allow_pickle: bool = False,
                    complete: bool = True) -> dict:
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
        complete: also require weights and tokenizer files (False: only what a folder must not hold,
            for a spec check that reads just the config).

    Raises:
        UsageError: for the first problem found.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UsageError(f"{path}: {'not a directory' if path.exists() else 'model directory not found'}")
    config = read_json(path / "config.json", "directory has no config.json (not a Hugging Face model directory)")
    try:
        family_of(config)
    except ValueError as error:
        raise UsageError(f"{path / 'config.json'}: {error}") from None
    tokenizer_config = path / "tokenizer_config.json"
    for file, values in (("config.json", config),
                         ("tokenizer_config.json", read_json(tokenizer_config) if tokenizer_config.is_file() else {})):
        if values.get("auto_map") and not trust_remote_code:
            raise UsageError(
                f"{path / file}: auto_map asks to run the folder's own Python code, which is off by default; "
                "use a model without it (a spec can opt in with teacher.trust_remote_code: true)"
            )
    _check_weights(path, allow_pickle, complete)
    if complete and not any((path / name).is_file() for name in TOKENIZER_FILES):
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


def read_json(file: Path, missing: str | None = None) -> dict:
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


def _check_weights(path: Path, allow_pickle: bool, complete: bool) -> None:
    """Safetensors weights that are complete, or (opt-in) pickled ones; a `UsageError` otherwise.
    With ``complete`` False only pickled-only weights are refused (a folder without weights passes)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
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
        if complete:
            raise UsageError(f"{path}: no weights (model.safetensors)")
        return
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
