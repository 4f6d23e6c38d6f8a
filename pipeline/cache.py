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


def cached(cache_dir: str | Path, key: str, build: Callable[[Path], None],
           verify: Callable[[Path], str | None] | None = None) -> Path:
    """``cache_dir/key``, built once by ``build(tmp_dir)`` if it is not complete and sound yet.

    A build killed half-way (SIGKILL, a lost node) leaves only its private ``.<key>.tmp-<pid>`` folder;
    the next build of the key removes such leftovers under the lock. A complete entry that ``verify``
    finds damaged (a corrupt ``metrics.json``, a truncated weight file) is removed and built again,
    with a warning that names it.

    Args:
        cache_dir: the cache folder (created if missing).
        key: e.g. from `stage_key`.
        build: writes the output (an HF directory, a JSON file ...) into the folder it is given.
        verify: returns what is wrong with a complete entry, or None when it is sound.

    Returns:
        the complete folder.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / key
    if is_complete(final) and (verify is None or verify(final) is None):
        log.debug("cache hit %s", key)
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f".{key}.lock")):
        # Holding the lock, nobody else is building this key: a tmp folder left here was killed.
        for stale in cache_dir.glob(f".{key}.tmp-*"):
            log.warning("removing %s, left by a build that was killed", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if is_complete(final):  # another process built it while we waited, or it is damaged
            problem = verify(final) if verify is not None else None
            if problem is None:
                return final
            log.warning("cache entry %s is damaged (%s); building it again", final, problem)
            shutil.rmtree(final)
        tmp = cache_dir / f".{key}.tmp-{os.getpid()}"
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
