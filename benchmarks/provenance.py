"""Where a benchmark result comes from, and writing it without losing an earlier one.

Every result file under ``benchmarks/results/`` records the command, the commit (and whether the
checkout had uncommitted changes), the machine and the date (`provenance`). A new run writes a new
file (`fresh_path`: the date in the name, then ``-2``, ``-3`` ...), so a file that RESULTS.md cites is
never overwritten by a later run; files are written through a temporary file and a rename
(`write_json`), so none is ever half-written.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["fresh_path", "provenance", "write_json"]

REPO = Path(__file__).resolve().parents[1]


def provenance(command: list[str]) -> dict:
    """``{"command", "commit", "dirty", "machine", "date"}`` of the run that is starting now."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    machine = {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
               "python": platform.python_version()}
    try:
        import torch

        machine["torch"] = torch.__version__
        machine["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    try:
        machine["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"command": " ".join(command), "commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")), "machine": machine,
            "date": time.strftime("%Y-%m-%d")}


def fresh_path(folder: Path, stem: str, suffix: str = ".json", date: str | None = None) -> Path:
    """``folder/stem-DATE.suffix``, or the first of ``-2``, ``-3`` ... after it that does not exist yet."""
    date = date or time.strftime("%Y-%m-%d")
    path = Path(folder) / f"{stem}-{date}{suffix}"
    number = 2
    while path.exists():
        path = Path(folder) / f"{stem}-{date}-{number}{suffix}"
        number += 1
    return path


def write_json(path: Path, payload, indent: int | None = 1) -> None:
    """``payload`` as JSON in ``path`` (``indent`` None: compact), through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=indent, separators=None if indent else (",", ":"))
            out.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a result file is for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
