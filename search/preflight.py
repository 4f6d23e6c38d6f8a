"""Preflight: open every source of a spec and summarise it before anything trains.

``python -m search.run SPEC --check`` prints the report; the search runs the same check before the
teacher's adaptation and stops there on a problem, so a dataset that does not load costs seconds, not
hours. The report holds the teacher's config and tokenizer, the corpus and held-out text (line counts,
first line), how many tokens each trimmed vocabulary of ``space.vocab`` keeps on the corpus (fewer
than asked when fewer pieces reach ``trim_vocab.min_count``), and every task (split sizes, label set,
the columns used). Each problem is one line naming the spec field.

Hygiene: the dev and test texts of the classification tasks must not appear in the corpus or the
held-out text (SIB-200's topic sentences are FLORES text, for instance): such an overlap is a problem.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.config import CorpusSource
from pipeline.errors import UsageError
from pipeline.families import family_of
from pipeline.sizes import config_parameters
from search.schema import Spec
from search.spec import teacher_config

__all__ = ["HUB_SAMPLE", "PreflightError", "Report", "preflight"]

HUB_SAMPLE = 10_000  # hub corpora are read up to this many lines by the check (local files in full)
_SHOWN = 70


class PreflightError(UsageError):
    """Problems found by the preflight; ``problems`` holds one ``field: message`` line each."""

    def __init__(self, problems: Iterable[str]):
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class Report:
    """What the preflight saw (``rows``: lines of the summary) and what is wrong (``problems``)."""

    rows: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.rows)

    def raise_problems(self) -> None:
        if self.problems:
            raise PreflightError(self.problems)


def preflight(spec: Spec) -> Report:
    """Open the teacher's config and tokenizer, the corpus, the held-out text and every task of ``spec``."""
    report = Report()
    tokenizer = _teacher(spec, report)
    read = {name: _corpus(name, getattr(spec.data, name), report) for name in ("corpus", "heldout")}
    texts = {name: {_normal(line) for line in lines} for name, lines in read.items()}
    if tokenizer is not None and read["corpus"]:
        _trimmed(spec, tokenizer, read["corpus"], report)
    report.rows.append(f"{'task':<10} {'train / dev / test':<22} {'labels':<44} columns")
    for task, source in spec.data.tasks.items():
        data = _guard(report, f"data.tasks.{task}", lambda: _load_task(task, source))
        if data is None:
            report.rows.append(f"{task:<10} (not loaded: see the problems below)")
            continue
        sizes = " / ".join(f"{n:,}" for n in data.sizes.values())
        labels = f"{len(data.labels)}: {' '.join(data.labels)}"
        report.rows.append(f"{task:<10} {sizes:<22} {_cut(labels, 44):<44} {data.columns}")
        if data.kind == "classification":
            for name, lines in texts.items():
                _overlap(report, task, data, name, lines)
    return report


def _load_task(task, source):
    from pipeline.data import load_task

    return load_task(task, source)


def _teacher(spec: Spec, report: Report):
    """Add the teacher's row; returns its tokenizer when one was loaded."""
    model = spec.teacher.model
    config = _guard(report, "teacher.model", lambda: teacher_config(spec))
    if config is None:
        return None
    line = (f"teacher    {spec.teacher.label}: {family_of(config).name}, {config['num_hidden_layers']} layers, hidden "
            f"{config['hidden_size']}, FFN {config['intermediate_size']}, vocabulary {config['vocab_size']:,}, "
            f"{config_parameters(config):,} parameters")
    if model is None:
        report.rows.append(line + "; tokenizer and weights: trained on data.corpus on first use")
        return None
    if model.startswith("synthetic:"):
        report.rows.append(line + "; tokenizer: built on first use")
        return None
    tokenizer = _guard(report, "teacher.model", lambda: _tokenizer(model))
    if tokenizer is not None:
        size = len(tokenizer)
        report.rows.append(line + f"; tokenizer: {type(tokenizer).__name__}, {size:,} tokens")
        if size > config["vocab_size"]:
            report.problems.append(f"teacher.model: {model}: the tokenizer has {size:,} tokens but the model's "
                                   f"vocabulary only {config['vocab_size']:,} rows")
    else:
        report.rows.append(line)
    return tokenizer


def _trimmed(spec: Spec, tokenizer, lines: list[str], report: Report) -> None:
    """A row that says how many tokens each trimmed vocabulary of ``space.vocab`` keeps on this corpus:
    fewer than asked when fewer pieces reach ``trim_vocab.min_count``."""
    from pipeline.trim_vocab import count_pieces, kept_specials

    sizes = sorted({int(v) for v in spec.space.vocab if v != "full" and int(v) < len(tokenizer)}, reverse=True)
    if not sizes:
        return
    cfg = spec.trim_vocab
    specials = set(kept_specials(tokenizer))
    counts = count_pieces(tokenizer, lines, cfg.counting)
    reaching = sum(1 for index, count in counts.items() if count >= cfg.min_count and index not in specials)
    source = spec.data.corpus
    sampled = _hub(source) and (source.max_lines is None or source.max_lines > HUB_SAMPLE) and len(lines) >= HUB_SAMPLE
    where = f"the first {len(lines):,} lines of data.corpus" if sampled else f"data.corpus ({len(lines):,} lines)"
    kept = ", ".join(f"{size} keeps {'at least ' if sampled and reaching + len(specials) < size else ''}"
                     f"{min(size, reaching + len(specials)):,}" for size in sizes)
    counted = "documents" if cfg.counting == "document" else "times"
    report.rows.append(f"{'trim_vocab':<10} {reaching:,} pieces occur at least {cfg.min_count} {counted} in {where}: "
                       f"space.vocab {kept} tokens (with {len(specials)} special tokens)")


def _hub(source: CorpusSource) -> bool:
    return source.format == "hf" or source.source.startswith("hf:")


def _tokenizer(model: str):
    from pipeline import modeling

    return modeling.load_tokenizer(model)


def _corpus(name: str, source: CorpusSource, report: Report) -> list[str]:
    """Read the text (a hub corpus up to `HUB_SAMPLE` lines), add its row; returns its lines."""
    from pipeline.corpus import read_corpus

    if source.source.startswith("synthetic:"):
        report.rows.append(f"{name:<10} {source.source}: built on first use")
        return []
    hub = _hub(source)
    capped = hub and (source.max_lines is None or source.max_lines > HUB_SAMPLE)
    read = dataclasses.replace(source, max_lines=HUB_SAMPLE) if capped else source
    lines = _guard(report, f"data.{name}", lambda: read_corpus(read))
    if lines is None:
        report.rows.append(f"{name:<10} {source.source}: not read (see the problems below)")
        return []
    count = f"first {len(lines):,} lines read (of {'all' if source.max_lines is None else f'{source.max_lines:,}'})" \
        if capped else f"{len(lines):,} lines"
    words = sum(len(line.split()) for line in lines)
    report.rows.append(f"{name:<10} {_cut(source.source, 50)}: {count}, {words:,} words; first: {_cut(lines[0], _SHOWN)!r}")
    return lines


def _overlap(report: Report, task: str, data, name: str, lines: set[str]) -> None:
    for split in ("dev", "test"):
        texts = {_normal(text) for text in getattr(data, split).inputs if len(text.split()) >= 4}
        shared = texts & lines
        if shared:
            report.problems.append(
                f"data.{name}: {len(shared)} of its lines are {split} texts of data.tasks.{task} (e.g. "
                f"{_cut(next(iter(sorted(shared))), 50)!r}): a test set's text must not be training or held-out text")


def _guard(report: Report, where: str, fn):
    try:
        return fn()
    except UsageError as error:
        for line in str(error).splitlines():
            report.problems.append(line if line.startswith(f"{where}:") else f"{where}: {line}")
    return None


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _cut(text: str, width: int) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 3] + "..."

