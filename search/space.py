"""The search space of a spec: its choices, its candidate students and their exact sizes.

Sizes come from the teacher's ``config.json`` alone (`pipeline.sizes`), so a whole space is sized
in milliseconds without torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config import Candidate
from pipeline.sizes import config_parameters, family_of
from search.spec import Constraints, Spec

__all__ = [
    "SizedCandidate",
    "candidate_from",
    "candidates",
    "choices",
    "constraint_violations",
    "format_size_table",
    "size_table",
    "student_parameters",
]


def choices(spec: Spec) -> dict[str, tuple[Any, ...]]:
    """The categorical choices of the space under the `Candidate` field names.

    ``vocab: full`` becomes ``None`` (keep the teacher's vocabulary).
    """
    space = spec.space
    return {
        "num_hidden_layers": space.layers,
        "intermediate_size": space.ffn,
        "hidden_size": space.hidden,
        "vocab_size": tuple(None if value == "full" else value for value in space.vocab),
        "init": space.init,
    }


def candidate_from(values: Mapping[str, Any]) -> Candidate:
    """A `Candidate` from sampled values keyed like `choices` (unknown keys are ignored)."""
    return Candidate(
        num_hidden_layers=int(values["num_hidden_layers"]),
        intermediate_size=int(values["intermediate_size"]),
        hidden_size=int(values["hidden_size"]),
        vocab_size=None if values.get("vocab_size") in (None, "full") else int(values["vocab_size"]),
        init=values.get("init", "stride"),
    )


def candidates(spec: Spec, teacher_config: Mapping[str, Any]) -> list[Candidate]:
    """Every combination of the space's choices, in the order the spec lists them.

    A vocabulary as large as the teacher's is the full vocabulary (``vocab_size=None``).
    """
    full = int(teacher_config["vocab_size"])
    grid = choices(spec)
    out = []
    for layers, ffn, hidden, vocab, init in itertools.product(*grid.values()):
        vocab = None if vocab is not None and vocab >= full else vocab
        out.append(Candidate(num_hidden_layers=layers, intermediate_size=ffn, hidden_size=hidden, vocab_size=vocab, init=init))
    return out


def student_parameters(teacher_config: Mapping[str, Any], candidate: Candidate) -> int:
    """Exact ``num_parameters()`` of the candidate's ``...ForMaskedLM`` model."""
    sizes = {
        "num_hidden_layers": candidate.num_hidden_layers,
        "intermediate_size": candidate.intermediate_size,
        "hidden_size": candidate.hidden_size,
    }
    if candidate.vocab_size is not None:
        sizes["vocab_size"] = candidate.vocab_size
    return config_parameters(teacher_config, **sizes)


def constraint_violations(constraints: Constraints, metrics: Mapping[str, Any]) -> list[str]:
    """The constraints that ``metrics`` (keys ``params``, ``quality``, ``latency_ms``) break.

    A metric that is absent breaks nothing here: the dry run knows sizes only.
    """
    broken = []
    params, quality, latency = (metrics.get(key) for key in ("params", "quality", "latency_ms"))
    if constraints.max_params is not None and params is not None and params > constraints.max_params:
        broken.append(f"params > max_params={constraints.max_params:,}")
    if constraints.min_quality is not None and quality is not None and quality < constraints.min_quality:
        broken.append(f"quality < min_quality={constraints.min_quality:g}")
    if constraints.max_latency_ms is not None and latency is not None and latency > constraints.max_latency_ms:
        broken.append(f"latency_ms > max_latency_ms={constraints.max_latency_ms:g}")
    return broken


@dataclass(frozen=True)
class SizedCandidate:
    """A candidate with its exact parameter count, its compression against the teacher (a
    fraction: 0.918 means 91.8% fewer parameters) and the constraints it breaks."""

    candidate: Candidate
    params: int
    compression: float
    violations: tuple[str, ...] = ()


def size_table(spec: Spec, teacher_config: Mapping[str, Any]) -> list[SizedCandidate]:
    """Every candidate of the spec with its size; needs only the teacher's ``config.json``."""
    teacher_params = config_parameters(teacher_config)
    rows = []
    for candidate in candidates(spec, teacher_config):
        params = student_parameters(teacher_config, candidate)
        broken = constraint_violations(spec.constraints, {"params": params})
        rows.append(SizedCandidate(candidate, params, 1 - params / teacher_params, tuple(broken)))
    return rows


def format_size_table(spec: Spec, teacher_config: Mapping[str, Any], rows: list[SizedCandidate]) -> str:
    """The dry run's report: a teacher line, one row per candidate, a summary line."""
    t = teacher_config
    teacher_params = config_parameters(t)
    show_init = len(spec.space.init) > 1
    lines = [
        f"teacher {spec.teacher.model} ({family_of(t)}): {t['num_hidden_layers']} layers, FFN {t['intermediate_size']}, "
        f"hidden {t['hidden_size']}, vocab {t['vocab_size']:,}, {t['num_attention_heads']} heads: {teacher_params:,} parameters",
    ]
    header = ["#", "layers", "ffn", "hidden", "vocab"] + (["init"] if show_init else []) + ["parameters", "compression", ""]
    table = [header]
    for i, row in enumerate(rows, 1):
        c = row.candidate
        vocab = "full" if c.vocab_size is None else str(c.vocab_size)
        cells = [str(i), str(c.num_hidden_layers), str(c.intermediate_size), str(c.hidden_size), vocab]
        cells += [c.init] if show_init else []
        mark = "x " + ", ".join(row.violations) if row.violations else ""
        cells += [f"{row.params:,}", f"{100 * row.compression:.1f}%", mark]
        table.append(cells)
    widths = [max(len(r[k]) for r in table) for k in range(len(header))]
    left = {"init", ""}
    for r in table:
        cells = [cell.ljust(w) if header[k] in left else cell.rjust(w) for k, (cell, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.append(_summary(spec, rows))
    return "\n".join(lines)


def _summary(spec: Spec, rows: list[SizedCandidate]) -> str:
    ok = [row for row in rows if not row.violations]
    limits = ", ".join(
        f"{name}={value:,}" if isinstance(value, int) else f"{name}={value:g}"
        for name, value in spec.constraints.model_dump().items()
        if value is not None
    )
    text = f"{len(rows)} candidates, {len(ok)} within constraints" + (f" ({limits})" if limits else "")
    if rows:
        small = min(rows, key=lambda row: row.params)
        large = max(rows, key=lambda row: row.params)
        text += (
            f"; smallest {_short(small.candidate)} {small.params:,} ({100 * small.compression:.1f}% smaller),"
            f" largest {_short(large.candidate)} {large.params:,} ({100 * large.compression:.1f}% smaller)"
        )
    s = spec.search
    text += f"; search: {s.sampler}, {s.num_samples} trials, {s.max_concurrent} at a time"
    return text


def _short(c: Candidate) -> str:
    vocab = "full" if c.vocab_size is None else str(c.vocab_size)
    return f"L{c.num_hidden_layers}/H{c.hidden_size}/F{c.intermediate_size}/V{vocab}"
