"""``python -m pipeline COMMAND ...``: every stage, evaluation and the synthetic language alone.

Each command lives in its own module, which provides ``add_arguments(parser)`` and ``main(args) -> int``.
Modules are imported only for the command that runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from pipeline.errors import OneLineParser, UsageError
from pipeline.logs import setup_logging

COMMANDS = {
    "adapt": ("pipeline.adapt", "continued MLM training of a teacher, or pretraining from scratch"),
    "distill": ("pipeline.distill", "distil a teacher into a student with fewer layers"),
    "prune": ("pipeline.prune", "structured FFN pruning by first-order Taylor importance"),
    "truncate": ("pipeline.truncate", "truncate the hidden size (first entries or SVD)"),
    "trim-vocab": ("pipeline.trim_vocab", "keep the most frequent pieces of a corpus"),
    "evaluate": ("pipeline.evaluate", "score a model on sentiment, topic, NER or POS"),
    "tokenizer": ("pipeline.vocab", "train a Unigram (xlmr) or WordPiece (bert) tokenizer on a corpus"),
    "synthetic": ("pipeline.synthetic", "generate the offline synthetic languages and their teacher"),
    "signal": ("pipeline.signals", "a cheap signal of a student: held-out losses, probes, a capped evaluation"),
    "trial": ("pipeline.trial", "run one candidate's stages and evaluation without Ray"),
    "export": ("pipeline.export", "a deployable folder: HF files, model card, checked ONNX fp32/int8 graphs"),
}


# What each command's --out names: a new model folder, a folder it writes into, or a file.
_OUT_KINDS = {"adapt": "model", "distill": "model", "prune": "model", "truncate": "model", "trim-vocab": "model",
              "evaluate": "folder", "synthetic": "folder", "trial": "file"}


def check_out(command: str, out: str | None) -> None:
    """Refuse an ``--out`` the command could not write, or would write over, before any work starts.

    A model folder must be new (or empty): a command never writes into, or over, a folder that holds
    files already. A folder output must not be a file, a file output not a folder, and no parent of
    either may be a file.

    Raises:
        UsageError: naming ``--out`` and the problem.
    """
    if out is None:
        return
    path = Path(out).expanduser()
    kind = _OUT_KINDS.get(command, "folder")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out {out}: {parent} is a file, not a folder")
    if kind == "file":
        if path.is_dir():
            raise UsageError(f"--out {out}: is a folder; give a file name")
        return
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: is an existing file; give a folder")
    if kind == "model" and path.is_dir() and any(path.iterdir()):
        raise UsageError(f"--out {out}: the folder exists and is not empty; give a new folder or remove this one")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module_name)
        # Only the chosen command's module is imported: argv decides before any heavy import.
        if name in argv[:2]:
            importlib.import_module(module_name).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    module = importlib.import_module(args._module)
    try:
        check_out(args.command, getattr(args, "out", None))
        return int(module.main(args) or 0)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
