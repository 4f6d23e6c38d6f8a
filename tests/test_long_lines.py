"""A whole corpus on one line: every command that reads text, and the preflight, read a 20 MB line.

A plain-text line longer than a window (1 MiB) comes in pieces cut at whitespace
(`pipeline.textfile.text_lines`), with memory bounded by the window; rows truncated to ``max_length``
tokenise only the head of such a piece (`pipeline.mlm.encode`), with the very rows of a full
tokenisation. Records (a CSV row, a JSON line) stay limited to 1 MiB (tests/test_bad_inputs.py).
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from pipeline.__main__ import main as pipeline_cli
from pipeline.corpus import read_corpus
from pipeline.textfile import MAX_LINE_BYTES, text_lines

SIZE = 20_000_000  # bytes on the one line


@pytest.fixture(scope="module")
def one_line(tmp_path_factory, maltese_sentences) -> Path:
    """20 MB of real Maltese sentences on a single line (no line break at all)."""
    text = " ".join(maltese_sentences)
    line = (text + " ") * (SIZE // len(text.encode()) + 1)
    path = tmp_path_factory.mktemp("long") / "document.txt"
    path.write_bytes(line.encode()[:SIZE].rsplit(b" ", 1)[0])
    return path


def test_a_20_mb_line_is_read_in_windows_with_bounded_memory(one_line):
    tracemalloc.start()
    pieces = 0
    for number, piece in text_lines(one_line):  # nothing kept: what reading itself holds
        assert number == 1 and len(piece) <= MAX_LINE_BYTES
        pieces += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # a few copies of one window (its bytes, the decoded text at 2 bytes a character), not the 20 MB line
    assert pieces == 20 and peak < 10 * MAX_LINE_BYTES, peak
    texts = read_corpus(str(one_line))
    assert len(texts) == 20
    assert " ".join(texts).split() == one_line.read_text(encoding="utf-8").split()  # no word lost or cut


def test_rows_of_long_texts_equal_a_full_tokenisation(one_line, tiny_xlmr, tiny_bert):
    from pipeline import modeling
    from pipeline.mlm import encode

    texts = read_corpus(str(one_line))[:1] + ["Bonġu ħbieb.", ""]
    for folder in (tiny_xlmr, tiny_bert):
        tokenizer = modeling.load_tokenizer(folder)
        full = tokenizer(texts, truncation=True, max_length=64)["input_ids"]
        assert encode(tokenizer, texts, 64) == [row for row in full if len(row) > 2]


@pytest.mark.slow
def test_every_stage_that_reads_text_and_the_preflight_read_a_20_mb_line(one_line, tiny_xlmr, shared_data, tmp_path,
                                                                        capsys):
    """adapt, distill, prune, trim-vocab and tokenizer each read the 20 MB line and write their output; the
    preflight reads it, counts its words and what trimming keeps. Slow: trimming counts the pieces of all
    20 MB and the tokenizer trains on them (tokenising 20 MB takes 10-20 s on one core)."""
    from search.run import main as search_cli
    from tests.conftest import local_spec

    model, corpus = str(tiny_xlmr), str(one_line)
    train = ["--steps", "1", "--batch-size", "4", "--max-length", "32"]
    commands = {
        "adapt": ["adapt", "--model", model, "--corpus", corpus, *train],
        "distill": ["distill", "--teacher", model, "--layers", "2", "--corpus", corpus, "--heldout", corpus, *train],
        "prune": ["prune", "--model", model, "--ffn", "16", "--corpus", corpus, "--max-batches", "1"],
        "trim-vocab": ["trim-vocab", "--model", model, "--corpus", corpus, "--vocab-size", "200"],
        "tokenizer": ["tokenizer", "--corpus", corpus, "--family", "bert", "--vocab-size", "300"],
    }
    for name, argv in commands.items():
        out = tmp_path / name
        assert pipeline_cli([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
        assert (out / ("tokenizer.json" if name == "tokenizer" else "metrics.json")).is_file(), name
    assert json.loads((tmp_path / "trim-vocab" / "metrics.json").read_text())["vocab_size"] == 200
    assert json.loads((tmp_path / "prune" / "metrics.json").read_text())["batches"] == 1
    assert json.loads((tmp_path / "distill" / "metrics.json").read_text())["heldout_evals"] == 2

    heldout = tmp_path / "heldout.txt"
    heldout.write_text("Il-kelb jiġri.\nIl-qattus jorqod.\n", encoding="utf-8")
    spec = local_spec(tmp_path / "spec.yaml", tiny_xlmr, one_line, heldout, {"pos": shared_data / "mt" / "pos"}, "200")
    capsys.readouterr()
    assert search_cli([str(spec), "--check"]) == 0
    rows: dict[str, str] = {}
    for line in capsys.readouterr().out.splitlines()[1:]:  # the preflight's rows, then the memory table's
        if line.split():
            rows.setdefault(line.split()[0], line)
    words = len(one_line.read_text(encoding="utf-8").split())
    assert rows["corpus"].endswith(f": 20 lines, {words:,} words; first: " + rows["corpus"].split("; first: ")[1])
    assert "space.vocab 200 keeps 200 tokens" in rows["trim_vocab"]
