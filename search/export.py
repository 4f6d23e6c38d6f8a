"""``python -m search.export [--tracking-uri URI] (--run RUN_ID | --alias ALIAS) --out DIR [--onnx] [--int8] [--force]``

Exports a student that a search logged to MLflow, exactly as ``python -m pipeline export`` exports a
model directory (`pipeline.export.export`): the run's ``model`` artifact (weights, tokenizer and the
card's data ``card.json``) is downloaded into a temporary folder and exported from there, so the card
keeps the search's lineage, scores and teacher reference, and the ONNX graphs are checked on the
search's held-out text. ``--alias`` names a registry alias (``pareto-1``, ``best-quality``, ...) of
``--model-name``, by default ``<experiment>-student`` with ``--experiment``, or the store's only
registered model. The tracking URI defaults to the search's (``sqlite:///<repo>/mlflow/mlflow.db``).

MLflow is reached through `search.tracking` (the only module that imports it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import LatencyConfig
from pipeline.errors import UsageError
from pipeline.logs import setup_logging
from search.schema import MlflowSettings

__all__ = ["build_parser", "export_student", "main"]

logger = logging.getLogger(__name__)


def export_student(tracking_uri: str, out: str, *, run_id: str | None = None, alias: str | None = None,
                   model_name: str | None = None, experiment: str | None = None, onnx: bool = False,
                   int8: bool = False, force: bool = False, text_file: str | None = None) -> str:
    """Export the student of ``run_id`` (or of the registry ``alias``) to ``out``; returns a summary for a person.

    Raises:
        UsageError: for an unknown run or alias, an ``out`` that would be overwritten without
            ``force``, or an ONNX check that fails (``out`` is then left as it was).
    """
    from pipeline.export import check_model_dir, check_out, export, format_summary, read_card
    from search.tracking import download_student, find_student

    check_out(Path(out), force)  # before anything is downloaded
    found = find_student(tracking_uri, run_id=run_id, alias=alias, model_name=model_name, experiment=experiment)
    with tempfile.TemporaryDirectory(prefix="lrl-export-") as scratch:
        model_dir = download_student(tracking_uri, found, scratch)
        card = read_card(check_model_dir(model_dir))
        summary = export(model_dir, out, onnx=onnx, int8=int8, force=force, text_file=text_file, card=card,
                         latency=_latency_settings(card))
    what = f"{alias} (run {found})" if alias else f"run {found}"
    return f"Exported {what}:\n" + format_summary(summary)


def _latency_settings(card: Mapping[str, Any]) -> LatencyConfig:
    """The latency shape the search measured with (its card's first row), else the defaults."""
    rows = card.get("latency") or []
    if not rows:
        return LatencyConfig()
    keys = ("batch", "seq_len", "threads", "repeats", "warmup")
    return LatencyConfig(**{key: rows[0][key] for key in keys if key in rows[0]})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.export",
                                     description="Export a student that a search logged to MLflow.")
    parser.add_argument("--tracking-uri", default=None,
                        help="the MLflow store (default: sqlite:///<repo>/mlflow/mlflow.db, as the search's)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="RUN_ID", help="a trial run's id")
    which.add_argument("--alias", help="a registry alias: pareto-1, best-quality, ...")
    parser.add_argument("--model-name", default=None, help="the registered model (default: <experiment>-student)")
    parser.add_argument("--experiment", default=None, help="the search's experiment (names the registered model)")
    parser.add_argument("--out", required=True, help="the folder to write (refused if not empty, unless --force)")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx, checked against PyTorch")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (implies --onnx)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists and is not empty")
    parser.add_argument("--text", default=None, help="text for the ONNX checks (default: the search's held-out text)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 fine, 2 bad input)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        uri = MlflowSettings(tracking_uri=args.tracking_uri).tracking_uri
        print(export_student(uri, args.out, run_id=args.run, alias=args.alias, model_name=args.model_name,
                             experiment=args.experiment, onnx=args.onnx, int8=args.int8, force=args.force,
                             text_file=args.text))
        return 0
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
