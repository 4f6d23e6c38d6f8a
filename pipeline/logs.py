"""Log setup shared by the command lines (``python -m pipeline``, ``search.run``, ``search.export``).

One format for every line, and no progress bars when the output is not a terminal: a log file then
gets the periodic progress lines of the long loops (`pipeline.training`) instead of carriage-return
bars (transformers 5 draws one for every model it loads, MLflow one for every download).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

__all__ = ["held_logs", "setup_logging"]


def setup_logging(verbose: bool = False) -> None:
    """INFO (or DEBUG) lines with time, level and logger; progress bars off unless stderr is a terminal."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if sys.stderr.isatty():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when transformers is imported (here and in Ray workers)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # MLflow's download bars (search.export)
    if "transformers" in sys.modules:  # already imported: switch its bars off directly
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


@contextlib.contextmanager
def held_logs() -> Iterator[None]:
    """Hold back the log lines of a block that checks input: shown when it ends normally, dropped when it
    raises, so that bad input is one line on stderr (e.g. the dry run's warning that a teacher's built-in
    config.json is used offline would otherwise come before the error that stops the command)."""
    root = logging.getLogger()
    held: list[logging.LogRecord] = []

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)

    handlers, hold = list(root.handlers), Hold()
    for handler in handlers:
        root.removeHandler(handler)
    root.addHandler(hold)
    try:
        yield
    except BaseException:
        held.clear()
        raise
    finally:
        root.removeHandler(hold)
        for handler in handlers:
            root.addHandler(handler)
        for record in held:
            root.handle(record)
