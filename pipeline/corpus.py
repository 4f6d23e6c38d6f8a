"""Unlabelled text from a `CorpusSource`: files, folders or hub datasets, as a list of lines.

Formats: ``text`` (one sentence or document a line, of any length: a line longer than 1 MiB is read
in pieces cut at whitespace, `pipeline.textfile.text_lines`), ``parseme`` (PARSEME-TSV: one token a line,
joined by a space unless column 3 is ``nsp``), ``jsonl``, ``csv``/``tsv`` (header row, ``text_column``)
and ``hf`` (``hf:org/name[:config]``). ``auto`` picks by prefix and file suffix. A folder means
every ``*.txt`` in it, or, when it holds none, every file with a known suffix.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.config import CorpusSource
from pipeline.errors import UsageError
from pipeline.textfile import lines, text_lines

__all__ = ["drop_texts", "read_corpus", "read_parseme", "split_heldout", "text_key"]

log = logging.getLogger(__name__)

_SUFFIXES = {
    ".txt": "text", ".parsemetsv": "parseme", ".cupt": "parseme", ".jsonl": "jsonl", ".json": "jsonl",
    ".csv": "csv", ".tsv": "tsv",
}


def read_corpus(source: CorpusSource | str) -> list[str]:
    """Non-empty, stripped lines of ``source``: the first ``skip_lines`` left out, then at most ``max_lines``.

    Raises:
        UsageError: when the source is missing, unreadable or holds no text.
    """
    if isinstance(source, str):
        source = CorpusSource(source=source)
    wanted = None if source.max_lines is None else source.skip_lines + source.max_lines
    if source.format == "hf" or source.source.startswith("hf:"):
        lines = _read_hf(source, wanted)
    else:
        path = Path(source.source).expanduser()
        if not path.exists():
            raise UsageError(f"{source.source}: corpus not found")
        files = _folder_files(path) if path.is_dir() else [path]
        lines = []
        for file in files:
            lines += [line.strip() for line in _read_file(file, source) if line and line.strip()]
            if wanted is not None and len(lines) >= wanted:
                break
    lines = [line.strip() for line in lines if line and line.strip()]
    lines = lines[source.skip_lines: wanted]
    if not lines:
        window = f" after skipping {source.skip_lines} lines" if source.skip_lines else ""
        raise UsageError(f"{source.source}: corpus is empty{window}")
    log.debug("read %d lines from %s", len(lines), source.source)
    return lines


def text_key(text: str | Sequence[str]) -> str:
    """What two renderings of one sentence share: its characters without any whitespace, case-folded.

    A token list (a CoNLL-U sentence: ``["Fil-", "qalba", ",", ...]``) and the raw line it was cut from
    (``"Fil-qalba, ..."``) get the same key, whatever spacing the tokenisation or the corpus used.
    """
    joined = text if isinstance(text, str) else "".join(text)
    return re.sub(r"\s+", "", joined).casefold()


def drop_texts(lines: Iterable[str], texts: Iterable[str | Sequence[str]]) -> tuple[list[str], list[str]]:
    """``lines`` without those equal to any of ``texts`` (compared by `text_key`): ``(kept, removed)``.

    ``texts`` may mix raw strings and token lists, e.g. every labelled sentence of the downstream
    tasks, so that none of them reaches a training or held-out corpus.
    """
    keys = {text_key(text) for text in texts}
    keys.discard("")
    kept, removed = [], []
    for line in lines:
        (removed if text_key(line) in keys else kept).append(line)
    return kept, removed


def split_heldout(texts: list[str], fraction: float = 0.05, max_lines: int = 1000) -> tuple[list[str], list[str]]:
    """Split ``texts`` into (train, heldout): the last ``fraction`` of lines (1 to ``max_lines``) is held out.

    A one-line corpus is used for both.
    """
    if len(texts) < 2:
        return list(texts), list(texts)
    count = min(max_lines, max(1, int(len(texts) * fraction)))
    return texts[:-count], texts[-count:]


def read_parseme(path: Path) -> list[str]:
    """Sentences of a PARSEME-TSV file: tokens joined by a space unless column 3 says ``nsp``.

    Raises:
        UsageError: naming the file and line of a line without a token column, or of bytes that are
            not UTF-8 text (`pipeline.textfile.lines`).
    """
    sentences, words = [], []
    for number, line in lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            if words:
                sentences.append("".join(words).strip())
                words = []
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise UsageError(f"{path}:{number}: not PARSEME-TSV (line {line[:40]!r} has no token column)")
        words.append(cols[1] + ("" if len(cols) > 2 and cols[2] == "nsp" else " "))
    if words:
        sentences.append("".join(words).strip())
    return sentences


def _folder_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.txt")) or sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
    if not files:
        raise UsageError(f"{path}: folder holds no *.txt (or other corpus) files")
    return files


def _read_file(path: Path, source: CorpusSource) -> list[str]:
    fmt = source.format if source.format != "auto" else _SUFFIXES.get(path.suffix, "text")
    if fmt == "text":  # a line of any length: a long one (a whole document) comes in pieces of at most 1 MiB
        return [piece for _, piece in text_lines(path)]
    if fmt == "parseme":
        return read_parseme(path)
    if fmt == "jsonl":
        return [_json_text(line, path, number, source.text_column) for number, line in lines(path) if line.strip()]
    rows = csv.DictReader((line for _, line in lines(path)), delimiter="\t" if fmt == "tsv" else ",")
    try:
        if rows.fieldnames is None or source.text_column not in rows.fieldnames:
            raise UsageError(f"{path}:1: no column {source.text_column!r} (columns: {rows.fieldnames})")
        return [row[source.text_column] or "" for row in rows]
    except csv.Error as error:
        raise UsageError(f"{path}:{rows.line_num}: {error}") from None


def _json_text(line: str, path: Path, number: int, column: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}:{number}: invalid JSON line ({error.msg})") from None
    if not isinstance(record, dict) or column not in record:
        raise UsageError(f"{path}:{number}: JSON line without key {column!r}")
    return str(record[column])


def _read_hf(source: CorpusSource, wanted: int | None) -> list[str]:
    """Lines of a hub dataset's text column; streamed when asked or when a cap makes it worthwhile
    (``split[:N]`` would still download and prepare the whole config first)."""
    from pipeline.data import hub_options, load_hub_dataset, parse_hub_id

    name, config = parse_hub_id(source.source)
    streaming = source.streaming if source.streaming is not None else wanted is not None
    data = load_hub_dataset(name, config, split=source.split, streaming=streaming, **hub_options(source))
    columns = list(data.column_names or []) if data.column_names is not None else None
    if columns is not None and source.text_column not in columns:
        raise UsageError(f"{source.source}: no column {source.text_column!r} (columns: {', '.join(columns)})")
    lines = []
    for record in data:
        text = record.get(source.text_column)
        if text is None and columns is None:
            raise UsageError(f"{source.source}: no column {source.text_column!r} (columns: {', '.join(record)})")
        if text is not None and str(text).strip():
            lines.append(str(text))
        if wanted is not None and len(lines) >= wanted:
            break
    return lines
