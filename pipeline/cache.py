"""A content-keyed folder cache of stage outputs, safe across processes.

A stage's output is stored under ``cache_dir/<key>`` where the key hashes the input's key, the stage
name and its config (`stage_key`), so trials that share a prefix of stages share its outputs. A folder
is complete once it carries a marker; builders write into a private temporary folder that is renamed
into place atomically, under an exclusive file lock, so two processes asking for one key compute it
once and nobody sees a half-written folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

__all__ = ["COMPLETE", "canonical_json", "cached", "is_complete", "stage_key"]

log = logging.getLogger(__name__)

COMPLETE = ".complete"


def canonical_json(value) -> str:
    """Sorted, compact JSON of dicts, lists, dataclasses and scalars (the hashing input)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain, ensure_ascii=False)


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot hash a {type(value).__name__} in a stage config")


def stage_key(input_key: str, stage: str, config: dict) -> str:
    """Short sha256 hex of the input's key, the stage name and the stage's config."""
    payload = canonical_json({"input": input_key, "stage": stage, "config": config})
    return f"{stage}-{hashlib.sha256(payload.encode('utf-8')).hexdigest()[:20]}"


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE).is_file()


def cached(cache_dir: str | Path, key: str, build: Callable[[Path], None]) -> Path:
    """``cache_dir/key``, built once by ``build(tmp_dir)`` if it is not complete yet.

    Args:
        cache_dir: the cache folder (created if missing).
        key: e.g. from `stage_key`.
        build: writes the output (an HF directory, a JSON file ...) into the folder it is given.

    Returns:
        the complete folder.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / key
    if is_complete(final):
        log.debug("cache hit %s", key)
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f".{key}.lock")):
        if is_complete(final):  # another process built it while we waited
            return final
        tmp = cache_dir / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            build(tmp)
            (tmp / COMPLETE).write_text("", encoding="utf-8")
            if final.exists():  # an incomplete leftover of an older layout
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached %s", key)
    return final
