"""Export a student for deployment: the stock Hugging Face files, a model card, and checked ONNX graphs.

``python -m pipeline export --model DIR --out DIR [--onnx] [--int8] [--force] [--text FILE]`` writes
into ``OUT``:

- the stock Hugging Face files (``config.json``, ``model.safetensors``, the tokenizer), saved afresh;
- ``model.onnx`` (``--onnx``): the encoder, ``input_ids``/``attention_mask`` ``[batch, sequence]`` to
  ``last_hidden_state``, both axes dynamic (`pipeline.runtimes.to_onnx`);
- ``model.int8.onnx`` (``--int8``, implies ``--onnx``): the same graph with dynamically quantized
  int8 weights;
- ``README.md``, the model card (`pipeline.card.model_card`), and ``card.json``, its data.

Each ONNX graph is checked against PyTorch on real text before anything is written: fp32 within
``ATOL`` (max absolute difference of the last hidden state over real tokens), int8 with a mean
cosine similarity per token of at least ``MIN_COSINE``. The text is ``--text FILE``; else the
held-out text that the model's ``card.json`` records (what the search distilled and selected with);
else `SAMPLE`, a fixed multilingual sample, and the card says which was used. Latency is measured on
every runtime written (`pipeline.measure.latency_ms`).

All or nothing: the folder is built under a temporary name beside ``OUT`` and renamed into place, so
a failed export (a model directory without weights or tokenizer, an ONNX check that fails, an
interrupt) leaves ``OUT`` as it was. An ``OUT`` that exists and is not empty is refused unless
``--force``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import CorpusSource, LatencyConfig
from pipeline.errors import UsageError

__all__ = ["ATOL", "MIN_COSINE", "SAMPLE", "add_arguments", "check_model_dir", "check_out", "check_text", "export", "format_summary",
           "main", "read_card"]

log = logging.getLogger(__name__)

ATOL = 1e-4  # fp32 graph: largest absolute difference of the last hidden state allowed
MIN_COSINE = 0.99  # int8 graph: smallest mean cosine similarity per token allowed
CHECK_LINES = 16  # sentences of the check text used
CHECK_LENGTH = 128  # longest check sentence in tokens

# A few plain sentences of the project's languages and others, for a model whose own text is unknown.
SAMPLE = (
    "Il-Belt Valletta hija l-belt kapitali ta' Malta.",
    "Il-Malti huwa l-lingwa nazzjonali ta' Malta u waħda mil-lingwi uffiċjali tal-Unjoni Ewropea.",
    "Illum it-temp huwa sabiħ u ħafna nies marru l-baħar.",
    "Bratislava je hlavné mesto Slovenska a leží na rieke Dunaj.",
    "Kiswahili ni lugha inayozungumzwa na watu wengi katika Afrika Mashariki.",
    "The committee will publish its report on the new railway next week.",
    "Die Bibliothek ist am Sonntag geschlossen.",
    "La ciudad celebra su fiesta mayor a finales de agosto.",
)
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt")


def check_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` when it is a Hugging Face model directory with config, weights and tokenizer.

    Raises:
        UsageError: naming the directory and what it lacks.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise UsageError(f"--model {model_dir}: no such directory")
    if not (path / "config.json").is_file():
        raise UsageError(f"--model {model_dir}: no config.json (not a Hugging Face model directory)")
    if not any((path / name).is_file() for name in _WEIGHTS):
        raise UsageError(f"--model {model_dir}: no weights ({' or '.join(_WEIGHTS[::2])})")
    if not any((path / name).is_file() for name in _TOKENIZER):
        raise UsageError(f"--model {model_dir}: no tokenizer ({', '.join(_TOKENIZER)})")
    return path


def check_text(text_file: str | Path | None, card: Mapping[str, Any] | None) -> tuple[list[str], str]:
    """The lines the ONNX checks run on and a phrase saying where they come from.

    Raises:
        UsageError: when ``text_file`` is given but cannot be read or holds no line.
    """
    from pipeline.corpus import read_corpus

    if text_file is not None:
        lines = read_corpus(CorpusSource(source=str(text_file), max_lines=1000))
        lines = [line for line in lines if line.strip()]
        if not lines:
            raise UsageError(f"--text {text_file}: no text in this file")
        return lines[:CHECK_LINES], f"--text {text_file}"
    heldout = (card or {}).get("heldout")
    if heldout:
        try:
            lines = [line for line in read_corpus(CorpusSource(**{**heldout, "max_lines": 1000})) if line.strip()]
        except (UsageError, OSError, ValueError, TypeError) as error:
            log.warning("the recorded held-out text %s cannot be read (%s); checking on the built-in sample",
                        heldout.get("source"), str(error).splitlines()[0] if str(error) else type(error).__name__)
        else:
            if lines:
                return lines[:CHECK_LINES], f"the held-out text of the search ({heldout['source']})"
    return list(SAMPLE), "a fixed multilingual sample (no text of the model's language was recorded or given)"


def export(model_dir: str | Path, out: str | Path, *, onnx: bool = False, int8: bool = False, force: bool = False,
           text_file: str | Path | None = None, card: Mapping[str, Any] | None = None,
           latency: LatencyConfig = LatencyConfig(), atol: float = ATOL, min_cosine: float = MIN_COSINE) -> dict:
    """Write the deployable folder ``out`` from the model in ``model_dir`` (see the module docstring).

    Args:
        model_dir: a Hugging Face ``...ForMaskedLM`` directory; its ``card.json``, if any, is the card's data.
        out: the folder to write (created; replaced with ``force``).
        onnx, int8: also write and check ``model.onnx`` / ``model.int8.onnx`` (``int8`` implies ``onnx``).
        force: replace an ``out`` that exists and is not empty.
        text_file: the text to check the ONNX graphs on (see `check_text`).
        card: card data to start from (instead of ``model_dir/card.json``).
        latency: shape, threads and repeats of the latency measured on each runtime written (its
            ``runtime`` is ignored).
        atol, min_cosine: the checks' limits.

    Returns:
        ``{"out", "files", "checks", "latency"}``: the folder, its files, the check results and one
        latency row per runtime.

    Raises:
        UsageError: for a bad model directory, an ``out`` that would be overwritten, unreadable text or
            a failed check; ``out`` is left untouched.
    """
    from pipeline import card as cards
    from pipeline import modeling, runtimes
    from pipeline.measure import disk_mb
    from pipeline.sizes import parameter_groups

    source = check_model_dir(model_dir)
    out = Path(out)
    check_out(out, force)
    data = dict(card if card is not None else read_card(source))
    lines, text_origin = check_text(text_file, data)
    onnx = onnx or int8
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model, tokenizer = modeling.load(source)
        modeling.save(model, tokenizer, tmp)
        config = modeling.load_config(tmp)
        sizes = {**parameter_groups(config), "disk_mb": disk_mb(tmp)}
        checks: dict[str, Any] = {}
        written = ["torch"]
        if onnx:
            with runtimes.threads(1):
                reference = _run_check_text("torch", tmp, tokenizer, lines)
                graph = runtimes.to_onnx(tmp, runtimes.onnx_file(tmp, "onnx"))
                checks["onnx"] = _max_abs_diff(_run_check_text("onnx", tmp, tokenizer, lines, graph), reference)
                if not checks["onnx"] <= atol:
                    raise UsageError(f"{out}: the ONNX fp32 graph differs from PyTorch by {checks['onnx']:.2e} "
                                     f"(max abs difference, limit {atol:g}) on {text_origin}; nothing was written")
                written.append("onnx")
                if int8:
                    quantized = runtimes.to_int8(graph, runtimes.onnx_file(tmp, "onnx-int8"))
                    outputs = _run_check_text("onnx-int8", tmp, tokenizer, lines, quantized)
                    checks["onnx-int8"] = _mean_cosine(outputs, reference)
                    if not checks["onnx-int8"] >= min_cosine:
                        raise UsageError(f"{out}: the ONNX int8 graph's outputs have a mean cosine similarity of "
                                         f"{checks['onnx-int8']:.4f} with PyTorch's (limit {min_cosine:g}) on "
                                         f"{text_origin}; nothing was written")
                    written.append("onnx-int8")
            checks["text"] = text_origin
            log.info("ONNX checks passed on %s: %s", text_origin,
                     ", ".join(f"{k} {v:.3g}" for k, v in checks.items() if k != "text"))
        rows = _latency_rows(tmp, written, latency, data)
        data.update(sizes=sizes, latency=rows, checks=checks, config={k: config[k] for k in (
            "num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")})
        data.setdefault("name", out.name)
        (tmp / "card.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(cards.model_card(data), encoding="utf-8")
        _readable(tmp)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "files": sorted(p.name for p in out.iterdir()), "checks": checks, "latency": rows}


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``out`` that is a file, or a folder that is not empty unless ``force`` (`UsageError`)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out}: exists and is not empty; pass --force to replace it")


def _readable(folder: Path) -> None:
    """Files as the umask allows for new files: the weights writer leaves owner-only (0600) files, and a
    folder meant to be shipped is read by others (a server, a container)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)
    folder.chmod(0o777 & ~umask)


def read_card(model_dir: Path) -> dict[str, Any]:
    """The card data a model directory carries (``card.json``), or ``{}``."""
    path = model_dir / "card.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    return data if isinstance(data, dict) else {}


def _run_check_text(runtime: str, folder: Path, tokenizer, lines: list[str], graph: Path | None = None) -> tuple:
    """``(last_hidden_state [batch, sequence, hidden], attention_mask [batch, sequence])`` on ``lines``."""
    from pipeline import runtimes
    from pipeline.families import max_positions
    from pipeline.modeling import load_config

    length = min(CHECK_LENGTH, max_positions(load_config(folder)))
    batch = tokenizer(lines, padding=True, truncation=True, max_length=length, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
    return runtimes.encoder_fn(runtime, folder, onnx_path=graph)(ids, mask), mask


def _max_abs_diff(candidate: tuple, reference: tuple) -> float:
    (a, mask), (b, _) = candidate, reference
    real = mask.astype(bool)  # padding positions carry no meaning
    return float(np.abs(a[real] - b[real]).max())


def _mean_cosine(candidate: tuple, reference: tuple) -> float:
    (a, mask), (b, _) = candidate, reference
    real = mask.astype(bool)
    x, y = a[real].astype(np.float64), b[real].astype(np.float64)  # [tokens, hidden]
    cosine = (x * y).sum(-1) / np.maximum(np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1), 1e-12)
    return float(cosine.mean())


def _latency_rows(folder: Path, runtimes_written: list[str], cfg: LatencyConfig,
                  card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per runtime written, with the teacher's time where the card recorded it for the same runtime
    and shape, then the card's own rows for the runtimes not written."""
    from pipeline.measure import latency_ms

    teacher = {}
    for row in card.get("latency") or []:
        same = all(row.get(key) == getattr(cfg, key) for key in ("batch", "seq_len", "threads"))
        if same and row.get("teacher_ms") is not None:
            teacher[row["runtime"]] = row["teacher_ms"]
    rows = []
    for runtime in runtimes_written:
        settings = dataclasses.replace(cfg, runtime=runtime)
        ms = latency_ms(folder, settings, onnx_dir=folder)
        rows.append({"runtime": runtime, "batch": cfg.batch, "seq_len": cfg.seq_len, "threads": cfg.threads,
                     "ms": ms, "teacher_ms": teacher.get(runtime)})
        log.info("latency on %s: %.2f ms (batch %d, %d tokens, %d threads)", runtime, ms, cfg.batch, cfg.seq_len,
                 cfg.threads)
    # What the card already recorded for a runtime not measured here (the search's runtime) stays.
    rows += [row for row in card.get("latency") or [] if row.get("runtime") not in runtimes_written]
    return rows


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = LatencyConfig()
    parser.add_argument("--model", required=True, help="the student: a Hugging Face model directory")
    parser.add_argument("--out", required=True, help="the folder to write (refused if not empty, unless --force)")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx, checked against PyTorch")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (implies --onnx)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists and is not empty")
    parser.add_argument("--text", default=None, help="real text of the model's language for the ONNX checks "
                        "(default: the held-out text its card.json records, else a fixed multilingual sample)")
    parser.add_argument("--language", default=None, help="the card's language (default: as its card.json says)")
    parser.add_argument("--license", default=None, help="the card's license (default: as its card.json says)")
    parser.add_argument("--teacher", default=None, help="the card's base_model (default: as its card.json says)")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="latency: sequences per pass")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="latency: tokens per sequence")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="latency: intra-op threads")
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="latency: timed passes")


def main(args: argparse.Namespace) -> int:
    try:
        latency = LatencyConfig(batch=args.batch, seq_len=args.seq_len, threads=args.threads, repeats=args.repeats)
    except ValueError as error:
        raise UsageError(f"latency: {error}") from None
    card = read_card(check_model_dir(args.model))
    card.update({key: value for key in ("language", "license", "teacher")
                 if (value := getattr(args, key)) is not None})
    summary = export(args.model, args.out, onnx=args.onnx, int8=args.int8, force=args.force, text_file=args.text,
                     card=card, latency=latency)
    print(format_summary(summary))
    return 0


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines for a person: the folder, the checks and the latency of each runtime."""
    lines = [f"exported to {summary['out']}: {', '.join(summary['files'])}"]
    checks = summary.get("checks") or {}
    if "onnx" in checks:
        lines.append(f"ONNX fp32 max abs difference {checks['onnx']:.2e}"
                     + (f", int8 mean cosine {checks['onnx-int8']:.4f}" if "onnx-int8" in checks else "")
                     + f" (checked on {checks['text']})")
    for row in summary.get("latency") or []:
        teacher = f", teacher {row['teacher_ms']:.2f} ms ({row['teacher_ms'] / row['ms']:.1f}x)" if row.get(
            "teacher_ms") else ""
        lines.append(f"latency {row['runtime']:<9} {row['ms']:8.2f} ms{teacher} "
                     f"(batch {row['batch']}, {row['seq_len']} tokens, {row['threads']} threads)")
    return "\n".join(lines)
