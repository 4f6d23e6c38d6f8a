"""Reading user text files line by line, with one-line errors that name the file and line.

Every local reader of task data and corpora goes through `lines`: it accepts UTF-8 with or without a
byte-order mark and any line ending (``\\n``, ``\\r\\n``), and refuses what would otherwise end in a
traceback or in silently wrong text: bytes that are not UTF-8, a NUL byte (a binary file), and a line
longer than `MAX_LINE_BYTES` (a file without line breaks: minified JSON, a dump, a binary blob).
Memory stays bounded by the longest allowed line, whatever the file holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UsageError

__all__ = ["MAX_LINE_BYTES", "lines"]

MAX_LINE_BYTES = 1 << 20  # 1 MiB: far beyond any sentence, paragraph or CSV record of real data
_BOM = b"\xef\xbb\xbf"


def lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for every line of ``path``, 1-based, line endings kept.

    Args:
        path: a UTF-8 text file.

    Yields:
        The line number and the decoded line with its ending (``\\n`` or ``\\r\\n``, none on the
        last line when the file does not end with one), as `csv.reader` expects.

    Raises:
        UsageError: ``<path>:<line>: ...`` for a file that cannot be opened, bytes that are not
            UTF-8, a NUL byte, or a line longer than `MAX_LINE_BYTES`.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as error:
        raise UsageError(f"{path}: cannot read ({error.strerror or error})") from None
    with handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise UsageError(
                    f"{path}:{number}: line is longer than {MAX_LINE_BYTES // (1 << 20)} MiB; expected text with "
                    "one sentence, paragraph or record a line"
                )
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if b"\x00" in raw:
                raise UsageError(f"{path}:{number}: binary data (a NUL byte at byte {raw.index(0) + 1}); "
                                 "expected UTF-8 text")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise UsageError(
                    f"{path}:{number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at byte {error.start + 1} of "
                    "the line); convert the file to UTF-8"
                ) from None
            yield number, text
