"""``python -m search.run SPEC [--dry-run | --check] [--set dotted.key=value ...] [--resume] [--address ADDR]``

Validates the spec (and every ``--set``) first; a bad spec prints one line per problem and exits
with code 2. ``--dry-run`` then prints every candidate student with its exact size from the
teacher's ``config.json`` alone and each stage's estimated peak memory (`search.memory`), and writes
nothing; ``--check`` opens every source of the spec and
summarises it (`search.preflight`); without either the search runs (`search.driver.run_search`),
which runs the same check before anything trains. ``--device-memory SIZE``: the stages that would not
fit are marked, and a stage that cannot fit even at batch 1 stops any run with one line, exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipeline.errors import OneLineParser, UsageError
from pipeline.logs import held_logs, setup_logging

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m search.run",
        description="Search the compressions of a multilingual encoder that a YAML spec describes.",
    )
    parser.add_argument("spec", metavar="SPEC", help="the spec file (YAML), e.g. specs/maltese.yaml")
    parser.add_argument("--dry-run", action="store_true", help="validate and print every candidate's size; run nothing, write nothing")
    parser.add_argument("--throughput", type=float, metavar="TOKENS_PER_S",
                        help="with --dry-run: distillation throughput (measured or stated) for a time estimate")
    parser.add_argument("--corpus-lines", type=int, metavar="N",
                        help="with --dry-run: the corpus' line count (default: data.corpus.max_lines), to say what "
                             "each trimmed vocabulary size needs of it")
    parser.add_argument("--device-memory", type=_size, metavar="SIZE",
                        help="memory of the device each run uses, e.g. 80GiB (a GPU) or 64GB (a CPU's RAM): the dry "
                             "run and the check mark stages that would not fit and give the largest batch that "
                             "would; any run stops first when a stage cannot fit even at batch 1")
    parser.add_argument("--check", action="store_true",
                        help="open every source (teacher, corpus, held-out text, tasks), summarise it, report problems; train nothing")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a spec field with a YAML value, e.g. --set space.hidden=[312,456] (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the search stored under search.storage_path")
    parser.add_argument("--address", metavar="ADDR", help="Ray address: local, auto or HOST:PORT (same as --set ray.address=ADDR)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 fine, 2 bad input)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    try:
        from search.spec import load_spec, teacher_config

        with held_logs():  # a spec with problems is its error lines and nothing else
            spec = load_spec(args.spec, overrides)
            stages = _memory(spec, args.device_memory)
        if args.dry_run:
            from search.memory import format_memory
            from search.space import format_build_summary, format_cost, format_size_table, format_trim, size_table

            config = teacher_config(spec)
            rows = size_table(spec, config)
            print(format_size_table(spec, config, rows))
            print()
            print(format_build_summary(spec, config, rows))
            print(format_cost(spec, config, rows, args.throughput))
            trim = format_trim(spec, config, args.corpus_lines)
            if trim:
                print(trim)
            print(format_memory(spec, stages, args.device_memory))
            return 0
        if args.check:
            from search.memory import format_memory
            from search.preflight import preflight

            report = preflight(spec)
            print(f"preflight of {args.spec}:\n{report.text()}")
            report.raise_problems()
            print(format_memory(spec, stages, args.device_memory))
            print("no problems found")
            return 0
        from search.driver import resume_spec, run_search

        if args.resume:
            spec = resume_spec(spec, args.spec, overrides)
        return run_search(spec, resume=args.resume, spec_file=args.spec, overrides=overrides)
    except UsageError as error:
        from search.preflight import PreflightError

        where = f"{args.spec}: " if isinstance(error, PreflightError) else ""
        for line in str(error).splitlines():
            print(f"error: {where}{line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _size(text: str) -> int:
    from pipeline.memory import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _memory(spec, device_memory: int | None):
    """Every stage's estimated peak; with ``device_memory``, the one line of a stage that cannot fit at batch 1."""
    from search.memory import memory_problem, stage_memory
    from search.preflight import PreflightError
    from search.space import size_table
    from search.spec import teacher_config

    config = teacher_config(spec)
    stages = stage_memory(spec, config, size_table(spec, config))
    problem = memory_problem(spec, stages, device_memory) if device_memory else None
    if problem:
        raise PreflightError([problem])
    return stages


if __name__ == "__main__":
    sys.exit(main())
