"""``python -m pipeline COMMAND ...``: every stage, evaluation and the synthetic language alone.

Each command lives in its own module, which provides ``add_arguments(parser)`` and ``main(args) -> int``.
Modules are imported only for the command that runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.errors import UsageError
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
    "trial": ("pipeline.trial", "run one candidate's stages and evaluation without Ray"),
    "export": ("pipeline.export", "a deployable folder: HF files, model card, checked ONNX fp32/int8 graphs"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
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
        return int(module.main(args) or 0)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
