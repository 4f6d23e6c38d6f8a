"""Reading user text files line by line, with one-line errors that name the file and line.

Every local reader of task data and corpora goes through this module: it accepts UTF-8 with or
without a byte-order mark and any line ending (``\\n``, ``\\r\\n``), and refuses what would otherwise
end in a traceback or in silently wrong text: bytes that are not UTF-8 and a NUL byte (a binary file).

Two readers, both with memory bounded by a window of `MAX_LINE_BYTES`, whatever the file holds:

- `lines`, for records (a CSV row, a JSON line, a CoNLL token line): a record longer than
  `MAX_LINE_BYTES` is refused (a file without line breaks: minified JSON, a dump, a binary blob);
- `text_lines`, for plain text (one sentence or document a line): a line of any length is read, a
  long one in pieces of at most a window, cut at whitespace (a whole document on one line of a
  corpus file becomes a few lines of text).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import UsageError

__all__ = ["MAX_LINE_BYTES", "lines", "text_lines"]

MAX_LINE_BYTES = 1 << 20  # 1 MiB: far beyond any sentence, paragraph or CSV record of real data
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\n\r\x0b\x0c"


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as error:
        raise UsageError(f"{path}: cannot read ({error.strerror or error})") from None


def _decode(raw: bytes, path: Path, number: int, offset: int = 0) -> str:
    """``raw`` (bytes of line ``number`` from byte ``offset`` of it) as text, or the one-line error."""
    if b"\x00" in raw:
        raise UsageError(f"{path}:{number}: binary data (a NUL byte at byte {offset + raw.index(0) + 1}); "
                         "expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path}:{number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at byte {offset + error.start + 1} of "
            "the line); convert the file to UTF-8"
        ) from None


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
    with _open(path) as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise UsageError(
                    f"{path}:{number}: line is longer than {MAX_LINE_BYTES // (1 << 20)} MiB; expected one record "
                    "(a row, a JSON object, a token) a line"
                )
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            yield number, _decode(raw, path, number)


def text_lines(path: str | Path, window: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a plain-text file, 1-based, line endings removed; a line longer than
    ``window`` bytes comes as several pieces of at most ``window`` bytes each, with the same number.

    A piece ends after the last whitespace of its window (within its second half; a word longer than
    half a window is cut between two characters), so no word is split in real text and no character
    ever is. Memory holds one window, however long the line.

    Raises:
        UsageError: ``<path>:<line>: ...`` for a file that cannot be opened, bytes that are not UTF-8
            or a NUL byte.
    """
    path = Path(path)
    with _open(path) as handle:
        number, offset, pending = 1, 0, b""  # offset: bytes of line `number` yielded before `pending`
        while True:
            raw = handle.readline(window - len(pending))
            buffer = pending + raw
            if not raw:
                if buffer:
                    yield number, _decode(_strip(buffer, number, offset), path, number, offset)
                return
            if buffer.endswith(b"\n"):
                yield number, _decode(_strip(buffer.rstrip(b"\r\n"), number, offset), path, number, offset)
                number, offset, pending = number + 1, 0, b""
                continue
            if len(buffer) < window:  # the file ends without a line break: the next read says so
                pending = buffer
                continue
            cut = _cut(buffer)
            yield number, _decode(_strip(buffer[:cut], number, offset), path, number, offset)
            offset, pending = offset + cut, buffer[cut:]


def _strip(raw: bytes, number: int, offset: int) -> bytes:
    return raw[len(_BOM):] if number == 1 and offset == 0 and raw.startswith(_BOM) else raw


def _cut(buffer: bytes) -> int:
    """Where a full window of a long line ends: after its last whitespace in the second half, else
    before the last character that starts in the second half (UTF-8 continuation bytes are 0b10xxxxxx)."""
    half = len(buffer) // 2
    last = max(buffer.rfind(bytes([byte]), half) for byte in _WHITESPACE)
    if last >= 0:
        return last + 1
    cut = len(buffer) - 1
    while cut > half and buffer[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut
