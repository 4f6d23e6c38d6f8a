"""The one exception type whose message is shown to a person as-is, and the argument parser that
reports its own errors the same way."""

import argparse

__all__ = ["OneLineParser", "UsageError"]


class UsageError(Exception):
    """Bad input a person can fix: a missing file, an impossible size, an unparsable line.

    The message is one line that names the file, line or option and says what is wrong; command-line
    entry points print it without a traceback and exit with code 2.
    """


class OneLineParser(argparse.ArgumentParser):
    """argparse with the house's error format: one ``error:`` line and exit code 2 (usage stays under
    ``--help``); subparsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}\n")
