"""Labelled data of the four downstream tasks, from the hub or from local files, as plain Python lists.

A task source is either ``hf:org/name[:config]`` (read with `datasets`, imported only then) or a local
folder holding one train, one dev and one test file. Split files are recognised by name: ``train.*`` or
``*-train.*`` / ``*_train.*``; ``dev``, ``validation``, ``valid`` or ``val``; ``test``. Formats:

- ``conllu``: CoNLL-U, FORM and UPOS columns; multiword-token ranges (``1-2``) and empty nodes (``1.1``)
  are skipped.
- ``conll``: one token a line, whitespace- or tab-separated columns, ``#`` comments, a blank line
  between sentences, an optional leading 1-based index column; token and tag columns by index
  (defaults: first and last, the index column not counted).
- ``csv`` / ``tsv``: one example a row, read with the `csv` module (quoted fields, line breaks inside
  fields); a header row is detected when its cells name the requested columns. Columns by name or
  0-based index; defaults: a ``text``-like and a ``label``-like header name, else label = second-last
  and text = last column (``label,text`` and ``index,category,text`` both work).
- ``jsonl``: one JSON object a line; classification ``text``/``label``, token tasks ``tokens`` and
  ``tags`` (or ``ner_tags``, ``upos``, ``pos_tags``).

Hub datasets: splits ``train``, ``validation`` (or dev/valid/val) and ``test``; fields are found by name
(classification: text/sentence/... and label/category/...; token tasks: tokens/words and, for pos,
upos/pos_tags/tags, for ner, ner_tags/tags), ClassLabel ids become their names. ``revision``,
``data_dir`` and ``data_files`` of the source go to ``load_dataset`` as they are: a script-based repo
(``datasets`` 4 and later refuse those) is reached through its parquet export, e.g. UD Maltese-MUDT as
``hf:universal-dependencies/universal_dependencies`` with ``revision: refs/convert/parquet`` and
``data_dir: mt_mudt``. Mapped and tested (in memory) for the datasets of ``specs/maltese.yaml``: UD
(tokens, upos), ``hf:Davlan/sib200:mlt_Latn`` (text, category), ``hf:unimelb-nlp/wikiann:mt`` (tokens,
ner_tags) and ``hf:DGurgurov/maltese_sa`` (label, text; the sentiment set of the reference scripts).

Labels are kept as strings (integers become ``"0"``, ``"1"``); the label set is the set of train labels.
A dev or test label that never occurs in train is an error naming it: a model cannot predict a class it
never saw, and silently mapping it would hide a wrong column choice. A source without a dev split gets
the last 10% of train as dev (logged); a missing train or test split, or an empty one, is an error.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CorpusSource, TaskSource
from pipeline.errors import UsageError
from pipeline.textfile import lines

__all__ = [
    "CLASSIFICATION_TASKS", "TOKEN_TASKS", "Split", "TaskData", "hub_options", "load_hub_dataset", "load_task",
    "parse_hub_id", "task_kind",
]

log = logging.getLogger(__name__)

CLASSIFICATION_TASKS = ("sentiment", "topic")
TOKEN_TASKS = ("ner", "pos")
SPLITS = ("train", "dev", "test")
_SPLIT_WORDS = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"), "test": ("test",)}
_TEXT_NAMES = ("text", "sentence", "content", "review", "tweet")
_LABEL_NAMES = ("label", "category", "labels", "class", "sentiment", "topic")
_TOKEN_NAMES = ("tokens", "words", "token")
_TAG_NAMES = {"ner": ("ner_tags", "tags", "labels", "ner"), "pos": ("upos", "pos_tags", "tags", "labels", "pos")}
_EXTENSIONS = {
    ".conllu": "conllu", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
    ".txt": "conll", ".conll": "conll", ".iob": "conll", ".iob2": "conll", ".bio": "conll",
}
csv.field_size_limit(1 << 24)


@dataclass(frozen=True)
class Split:
    """One split. Classification: ``inputs`` are texts, ``targets`` labels. Token tasks: ``inputs``
    are token lists and ``targets`` tag lists of the same lengths. ``origin`` names the file or hub split."""

    inputs: list
    targets: list
    origin: str

    def __len__(self) -> int:
        return len(self.inputs)

    def head(self, n: int | None) -> Split:
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return Split(self.inputs[:n], self.targets[:n], self.origin)


@dataclass(frozen=True)
class TaskData:
    """Train/dev/test of one task plus its label set (sorted; from train)."""

    task: str
    kind: str  # "classification" | "tokens"
    train: Split
    dev: Split
    test: Split
    labels: tuple[str, ...]
    columns: str = ""  # which fields or columns the inputs and labels came from, for people to check

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def task_kind(task: str) -> str:
    """``"classification"`` for sentiment/topic, ``"tokens"`` for ner/pos."""
    if task in CLASSIFICATION_TASKS:
        return "classification"
    if task in TOKEN_TASKS:
        return "tokens"
    raise UsageError(f"unknown task {task!r}: choose one of sentiment, topic, ner, pos")


def load_task(task: str, source: TaskSource) -> TaskData:
    """Read train/dev/test of ``task`` from ``source``.

    Args:
        task: ``sentiment``, ``topic``, ``ner`` or ``pos``.
        source: hub id ``hf:org/name[:config]`` or a local folder, plus format and column choices.

    Returns:
        The three splits and the sorted label set of train.

    Raises:
        UsageError: missing files, a line that does not parse (file and line named), an empty split,
            or a dev/test label that train lacks.
    """
    kind = task_kind(task)
    if source.source.startswith("hf:") or source.format == "hf":
        splits, columns = _load_hub(task, kind, source)
    else:
        splits, columns = _load_folder(task, kind, source)
    if splits.get("dev") is None:
        train = splits["train"]
        cut = max(1, len(train) // 10)
        if len(train) < 2:
            raise UsageError(f"{train.origin}: too few examples to hold out a dev split")
        log.warning("%s: no dev split; holding out the last %d train examples as dev", source.source, cut)
        splits["train"] = Split(train.inputs[:-cut], train.targets[:-cut], train.origin)
        splits["dev"] = Split(train.inputs[-cut:], train.targets[-cut:], train.origin + " (last 10%)")
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise UsageError(f"{splits[name].origin}: the {name} split is empty")
    labels = _label_set(kind, splits)
    return TaskData(task, kind, splits["train"], splits["dev"], splits["test"], labels, columns)


def _label_set(kind: str, splits: dict[str, Split]) -> tuple[str, ...]:
    def labels_of(split: Split) -> set[str]:
        if kind == "classification":
            return set(split.targets)
        return {tag for tags in split.targets for tag in tags}

    train = labels_of(splits["train"])
    for name in ("dev", "test"):
        unseen = sorted(labels_of(splits[name]) - train)
        if unseen:
            shown = ", ".join(repr(label[:60]) for label in unseen[:5])
            raise UsageError(
                f"{splits[name].origin}: label {shown} does not occur in train"
                f"{' (and %d more)' % (len(unseen) - 5) if len(unseen) > 5 else ''}; "
                "check the label column or add examples of it to train"
            )
    if all(label.lstrip("-").isdigit() for label in train):
        return tuple(sorted(train, key=int))
    return tuple(sorted(train))


# ---------------------------------------------------------------- local folders


def split_files(folder: Path) -> dict[str, Path]:
    """Find the train/dev/test files of ``folder`` by name; dev may be missing."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder (expected train/dev/test files or hf:org/name)")
    found: dict[str, list[Path]] = {name: [] for name in SPLITS}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        words = set(re.split(r"[-_.]", path.name.lower()))
        for name, keys in _SPLIT_WORDS.items():
            if words & set(keys):
                found[name].append(path)
    result: dict[str, Path] = {}
    for name, paths in found.items():
        if len(paths) > 1:
            known = [p for p in paths if p.suffix.lower() in _EXTENSIONS]
            paths = known if known else paths
        if len(paths) > 1:
            raise UsageError(f"{folder}: several {name} files ({', '.join(p.name for p in paths)}); keep one")
        if paths:
            result[name] = paths[0]
        elif name != "dev":
            raise UsageError(f"{folder}: no {name} file (expected names like {name}.tsv or x-{name}.conllu)")
    return result


def _load_folder(task: str, kind: str, source: TaskSource) -> tuple[dict[str, Split | None], str]:
    files = split_files(Path(source.source).expanduser())
    splits: dict[str, Split | None] = {"dev": None}
    for name, path in files.items():
        fmt = _file_format(path, kind, source.format)
        reader = _READERS[fmt]
        inputs, targets = [], []
        for x, y in reader(path, task, source):
            inputs.append(x)
            targets.append(y)
        splits[name] = Split(inputs, targets, str(path))
    return splits, _file_columns(files["train"], _file_format(files["train"], kind, source.format), task, source)


def _file_columns(path: Path, fmt: str, task: str, source: TaskSource) -> str:
    """Which columns of ``path`` the reader takes, said the way a person would check them."""
    if fmt == "conllu":
        return (f"{fmt}: token column {_column_index(source.token_column, 1, 'token_column', 10)}, "
                f"tag column {_column_index(source.tag_column, 3, 'tag_column', 10)}")
    if fmt == "conll":
        token = source.token_column if source.token_column is not None else "first (after an index column)"
        return f"{fmt}: token column {token}, tag column {source.tag_column if source.tag_column is not None else 'last'}"
    if fmt == "jsonl":
        with path.open(encoding="utf-8-sig") as handle:
            first = next((line for line in handle if line.strip()), "{}")
        keys = list(json.loads(first)) if first.strip().startswith("{") else []
        return f"{fmt}: {_record_columns(keys, task_kind(task), task, source)}"
    with path.open(encoding="utf-8", newline="") as handle:
        row = next((r for r in csv.reader(handle, delimiter="\t" if fmt == "tsv" else ",") if any(c.strip() for c in r)), [])
    text_at, label_at, is_header = _csv_columns(path, row, source)
    name = (lambda i: repr(row[i]) if is_header and -len(row) <= i < len(row) else f"#{i}")
    return f"{fmt}: text {name(text_at)}, label {name(label_at)}" + ("" if is_header else " (no header)")


def _record_columns(keys: list[str], kind: str, task: str, source: TaskSource) -> str:
    if kind == "classification":
        return f"text {_pick(keys, source.text_column, _TEXT_NAMES)!r}, label {_pick(keys, source.label_column, _LABEL_NAMES)!r}"
    return f"tokens {_pick(keys, source.token_column, _TOKEN_NAMES)!r}, tags {_pick(keys, source.tag_column, _TAG_NAMES[task])!r}"


def _file_format(path: Path, kind: str, fmt: str) -> str:
    if fmt == "auto":
        fmt = _EXTENSIONS.get(path.suffix.lower(), "")
        if kind == "tokens" and fmt in ("csv", "tsv"):
            fmt = "conll"  # one token a line with tab-separated columns
        if kind == "classification" and fmt == "conll":
            fmt = "tsv" if path.suffix.lower() == ".txt" else ""
        if not fmt:
            raise UsageError(f"{path}: cannot tell the format from the file name; set format")
    allowed = ("csv", "tsv", "jsonl") if kind == "classification" else ("conllu", "conll", "jsonl")
    if fmt not in allowed:
        raise UsageError(f"{path}: format {fmt!r} does not fit a {kind} task (use one of {', '.join(allowed)})")
    return fmt


def _column_index(value: str | None, default: int, field: str, width: int | None = None) -> int:
    if value is None:
        return default
    try:
        index = int(value)
    except ValueError:
        raise UsageError(f"{field} {value!r} must be a 0-based index for this format") from None
    if width is not None and not -width <= index < width:
        raise UsageError(f"{field} {value!r}: the format has {width} columns (0 to {width - 1})")
    return index


def _read_conllu(path: Path, task: str, source: TaskSource) -> Iterator[tuple[list[str], list[str]]]:
    token_col = _column_index(source.token_column, 1, "token_column", 10)
    tag_col = _column_index(source.tag_column, 3, "tag_column", 10)
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            if tokens:
                yield tokens, tags
                tokens, tags = [], []
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise UsageError(f"{path}:{number}: CoNLL-U line has {len(cols)} tab-separated columns, expected 10")
        if "-" in cols[0] or "." in cols[0]:
            continue  # multiword-token range or empty node
        if not cols[0].isdigit():
            raise UsageError(f"{path}:{number}: CoNLL-U ID {cols[0]!r} is not an integer")
        if cols[tag_col] in ("", "_"):
            raise UsageError(f"{path}:{number}: token {cols[token_col]!r} has no tag (column {tag_col + 1} is "
                             f"{cols[tag_col]!r}); every word of a {task} file needs one")
        tokens.append(cols[token_col])
        tags.append(cols[tag_col])
    if tokens:
        yield tokens, tags


def _read_conll(path: Path, task: str, source: TaskSource) -> Iterator[tuple[list[str], list[str]]]:
    rows: list[tuple[int, list[str]]] = []
    for number, line in lines(path):
        line = line.strip()
        if line.startswith("#"):
            continue
        if not line:
            if rows:
                yield _conll_sentence(path, rows, source)
                rows = []
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if cols[0] == "-DOCSTART-":
            continue
        rows.append((number, [c.strip() for c in cols]))
    if rows:
        yield _conll_sentence(path, rows, source)


def _conll_sentence(path: Path, rows: list[tuple[int, list[str]]], source: TaskSource):
    # A leading index column counts 1, 2, 3 ... in every sentence; the default token column skips it.
    indexed = len(rows[0][1]) > 2 and all(cols[0] == str(i) for i, (_, cols) in enumerate(rows, 1))
    token_col = _column_index(source.token_column, 1 if indexed else 0, "token_column")
    tag_col = _column_index(source.tag_column, -1, "tag_column")
    tokens, tags = [], []
    for number, cols in rows:
        try:
            token, tag = cols[token_col], cols[tag_col]
        except IndexError:
            raise UsageError(
                f"{path}:{number}: line has {len(cols)} column(s); token column {token_col} and tag column "
                f"{tag_col} are needed"
            ) from None
        if len(cols) < 2:
            raise UsageError(f"{path}:{number}: expected a token and a tag, got one column {cols[0]!r}")
        tokens.append(token)
        tags.append(tag)
    return tokens, tags


def _pick(names: list[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    lowered = [n.strip().lower() for n in names]
    options = (wanted,) if wanted is not None else candidates
    for option in options:
        if option.lower() in lowered:
            return names[lowered.index(option.lower())]
    return None


def _read_delimited(path: Path, task: str, source: TaskSource, delimiter: str) -> Iterator[tuple[str, str]]:
    reader = csv.reader((line for _, line in lines(path)), delimiter=delimiter)
    start = 1
    text_at = label_at = width = None
    try:
        for row in reader:
            number, start = start, reader.line_num + 1
            if not row or all(not cell.strip() for cell in row):
                continue
            if width is None:
                width = len(row)
                text_at, label_at, is_header = _csv_columns(path, row, source)
                if is_header:
                    continue
            elif len(row) != width:
                raise UsageError(
                    f"{path}:{number}: row has {len(row)} field(s) where the first row has {width}; quote fields "
                    f"that hold the delimiter {delimiter!r}"
                )
            try:
                text, label = row[text_at], row[label_at].strip()
            except IndexError:
                raise UsageError(
                    f"{path}:{number}: row has {len(row)} field(s); text column {text_at} and label "
                    f"column {label_at} are needed"
                ) from None
            if not label:
                raise UsageError(f"{path}:{number}: empty label")
            yield text, label
    except csv.Error as error:
        raise UsageError(f"{path}:{reader.line_num}: {error}") from None


def _csv_columns(path: Path, row: list[str], source: TaskSource) -> tuple[int, int, bool]:
    """Column indices of text and label, and whether ``row`` is a header."""
    named = [c for c in (source.text_column, source.label_column) if c is not None and not _is_int(c)]
    if source.header is None:
        # A header names the columns asked for, or has a text-like and a label-like name (then a name
        # asked for that it lacks is a typo, reported with the names it has).
        is_header = (_pick(row, None, _TEXT_NAMES) is not None and _pick(row, None, _LABEL_NAMES) is not None) or (
            bool(named) and any(_pick(row, name, ()) is not None for name in named))
    else:
        is_header = source.header
    if named and not is_header:
        raise UsageError(
            f"{path}:1: columns {', '.join(map(repr, named))} are given by name but the file has no header "
            "row with those names; give 0-based indices instead"
        )

    def index(wanted: str | None, candidates: tuple[str, ...], default: int) -> int:
        if wanted is not None and _is_int(wanted):
            return int(wanted)
        if is_header:
            name = _pick(row, wanted, candidates)
            if name is not None:
                return row.index(name)
            if wanted is not None:
                raise UsageError(f"{path}:1: no column named {wanted!r}; the header has {', '.join(map(repr, row))}")
        return default

    text_at, label_at = index(source.text_column, _TEXT_NAMES, -1), index(source.label_column, _LABEL_NAMES, -2)
    for field, at in (("text_column", text_at), ("label_column", label_at)):
        if not -len(row) <= at < len(row):
            shown = f" ({', '.join(row)})" if is_header else ""
            raise UsageError(f"{path}:1: {field} {at} is out of range: the file has {len(row)} column(s){shown}")
    return text_at, label_at, is_header


def _is_int(value: str) -> bool:
    return value.lstrip("-").isdigit()


def _read_csv(path: Path, task: str, source: TaskSource):
    return _read_delimited(path, task, source, ",")


def _read_tsv(path: Path, task: str, source: TaskSource):
    return _read_delimited(path, task, source, "\t")


def _read_jsonl(path: Path, task: str, source: TaskSource) -> Iterator[tuple]:
    kind = task_kind(task)
    for number, line in lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise UsageError(f"{path}:{number}: expected a JSON object")
        try:
            yield _record_example(record, kind, task, source)
        except (KeyError, TypeError, ValueError) as error:
            raise UsageError(f"{path}:{number}: {error}") from None


def _record_example(record: dict, kind: str, task: str, source: TaskSource, names: dict | None = None):
    """(input, target) of one JSON/hub record; ``names`` maps a field to its ClassLabel names."""
    names = names or {}
    keys = list(record)
    if kind == "classification":
        text_key = _pick(keys, source.text_column, _TEXT_NAMES)
        label_key = _pick(keys, source.label_column, _LABEL_NAMES)
        if text_key is None or label_key is None:
            raise ValueError(f"no text/label fields among {keys}; set text_column and label_column")
        return str(record[text_key]), _label_name(record[label_key], names.get(label_key))
    token_key = _pick(keys, source.token_column, _TOKEN_NAMES)
    tag_key = _pick(keys, source.tag_column, _TAG_NAMES[task])
    if token_key is None or tag_key is None:
        raise ValueError(f"no token/tag fields among {keys}; set token_column and tag_column")
    tokens, tags = record[token_key], record[tag_key]
    if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
        raise ValueError(f"{token_key!r} and {tag_key!r} must be lists of equal length")
    return [str(t) for t in tokens], [_label_name(t, names.get(tag_key)) for t in tags]


def _label_name(value, names: list[str] | None) -> str:
    if names is not None and isinstance(value, int):
        return names[value]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


_READERS = {"conllu": _read_conllu, "conll": _read_conll, "csv": _read_csv, "tsv": _read_tsv, "jsonl": _read_jsonl}


# ---------------------------------------------------------------- hub datasets

# Hub splits named like our three.
_HUB_SPLITS = {"train": ("train",), "dev": ("validation", "dev", "valid", "val"), "test": ("test",)}


def parse_hub_id(source: str) -> tuple[str, str | None]:
    """``hf:org/name[:config]`` -> (``org/name``, config or None)."""
    spec = source[3:] if source.startswith("hf:") else source
    name, _, config = spec.partition(":")
    if not name:
        raise UsageError(f"{source!r}: expected hf:org/name[:config]")
    return name, config or None


def hub_options(source: TaskSource | CorpusSource) -> dict:
    """The ``load_dataset`` options a source sets: ``revision``, ``data_dir``, ``data_files``."""
    options = {key: getattr(source, key) for key in ("revision", "data_dir", "data_files")}
    if isinstance(options["data_files"], tuple):
        options["data_files"] = list(options["data_files"])
    return {key: value for key, value in options.items() if value is not None}


def load_hub_dataset(name: str, config: str | None, *, split: str | None = None, streaming: bool = False,
                     **options):
    """`datasets.load_dataset` of a hub dataset, its failures turned into one line.

    Args:
        name: ``org/name``.
        config: the configuration, or None.
        split: one split, or None for all of them (a ``DatasetDict``).
        streaming: iterate the records instead of downloading and preparing the whole dataset.
        options: ``revision``, ``data_dir``, ``data_files`` (see `hub_options`).

    Raises:
        UsageError: naming the dataset and what to do: a script-based repo (``datasets`` 4 and
            later refuse them), a gated one (log in), one that is missing, or the hub out of reach.
    """
    import datasets

    shown = f"hf:{name}" + (f":{config}" if config else "")
    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming, **options)
    except Exception as error:  # noqa: BLE001 - hub errors come in many types; one line for the user
        raise UsageError(f"{shown}: {_hub_problem(name, config, error)}") from None


def _hub_problem(name: str, config: str | None, error: Exception) -> str:
    text = str(error)
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    lowered = text.lower()
    if "dataset scripts are no longer supported" in lowered:
        script = text.rsplit(" ", 1)[-1].strip() if "found" in lowered else "a loading script"
        export = f"revision: refs/convert/parquet with data_dir: {config}" if config else "revision: refs/convert/parquet"
        return (f"a script-based dataset ({script}), which datasets 4 and later no longer run; use a data-file "
                f"copy of it, its parquet export (source: hf:{name}, {export}), or local files")
    if "gated" in lowered or type(error).__name__ == "GatedRepoError":
        return (f"a gated dataset: accept its terms on https://huggingface.co/datasets/{name}, then log in with "
                "`hf auth login` (or set HF_TOKEN)")
    if type(error).__name__ in ("DatasetNotFoundError", "RepositoryNotFoundError") or "doesn't exist" in lowered:
        return f"not found on the hub (or private: log in with `hf auth login`) ({first})"
    if "offline" in lowered or isinstance(error, (ConnectionError, TimeoutError)):
        return f"the hub cannot be reached ({first}); run where it can, or use local files"
    return f"cannot load ({type(error).__name__}: {first})"


def _load_hub(task: str, kind: str, source: TaskSource) -> tuple[dict[str, Split | None], str]:
    name, config = parse_hub_id(source.source)
    dataset = load_hub_dataset(name, config, **hub_options(source))
    available = list(dataset.keys())
    splits: dict[str, Split | None] = {"dev": None}
    for ours, theirs in _HUB_SPLITS.items():
        hub_split = next((s for s in theirs if s in available), None)
        if hub_split is None:
            if ours == "dev":
                continue
            raise UsageError(f"{source.source}: no {ours} split (has {', '.join(available)})")
        part = dataset[hub_split]
        names = _class_label_names(part.features)
        origin = f"{source.source}[{hub_split}]"
        inputs, targets = [], []
        for index, record in enumerate(part):
            try:
                x, y = _record_example(record, kind, task, source, names)
            except (KeyError, TypeError, ValueError, IndexError) as error:
                raise UsageError(f"{origin} row {index}: {error}") from None
            inputs.append(x)
            targets.append(y)
        splits[ours] = Split(inputs, targets, origin)
    return splits, f"hub: {_record_columns(list(dataset[next(iter(available))].features), kind, task, source)}"


def _class_label_names(features) -> dict[str, list[str]]:
    """Field -> ClassLabel names, for plain and list-of ClassLabel features."""
    result = {}
    for key, feature in features.items():
        inner = getattr(feature, "feature", feature)
        names = getattr(inner, "names", None)
        if isinstance(names, list):
            result[key] = names
    return result
