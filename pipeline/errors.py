"""The one exception type whose message is shown to a person as-is."""

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input a person can fix: a missing file, an impossible size, an unparsable line.

    The message is one line that names the file, line or option and says what is wrong; command-line
    entry points print it without a traceback and exit with code 2.
    """
