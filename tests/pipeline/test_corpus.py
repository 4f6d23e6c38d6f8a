"""Corpus readers over the real Maltese files and small hand-made ones."""

from __future__ import annotations

import pytest

from pipeline.config import CorpusSource
from pipeline.corpus import read_corpus, split_heldout
from pipeline.errors import UsageError


def test_parseme_folder_and_cap(shared_data):
    lines = read_corpus(CorpusSource(source=str(shared_data / "mt" / "raw"), max_lines=50))
    assert len(lines) == 50
    assert all(line == line.strip() and line for line in lines)
    assert "l-akbar" in read_corpus(str(shared_data / "mt" / "raw" / "test.parsemetsv"))[0]


def test_text_file_flores(shared_data):
    lines = read_corpus(CorpusSource(source=str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn")))
    assert len(lines) == 997


def test_jsonl_csv_tsv_and_folder(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "wieħed"}\n{"text": "tnejn"}\n', encoding="utf-8")
    (tmp_path / "b.csv").write_text('id,text\n1,"tlieta, erba"\n', encoding="utf-8")
    (tmp_path / "c.tsv").write_text("sentence\n5\tħamsa\n", encoding="utf-8")
    assert read_corpus(str(tmp_path / "a.jsonl")) == ["wieħed", "tnejn"]
    assert read_corpus(str(tmp_path / "b.csv")) == ["tlieta, erba"]
    with pytest.raises(UsageError, match="no column 'text'"):
        read_corpus(str(tmp_path / "c.tsv"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("one\n\ntwo\n", encoding="utf-8")
    (tmp_path / "d" / "y.txt").write_text("three\n", encoding="utf-8")
    assert read_corpus(str(tmp_path / "d")) == ["one", "two", "three"]


def test_empty_and_missing_are_usage_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(UsageError, match="corpus is empty"):
        read_corpus(str(tmp_path / "empty.txt"))
    with pytest.raises(UsageError, match="not found"):
        read_corpus(str(tmp_path / "missing.txt"))


def test_split_heldout():
    train, heldout = split_heldout([str(i) for i in range(100)])
    assert len(heldout) == 5 and train + heldout == [str(i) for i in range(100)]
    assert split_heldout(["only"]) == (["only"], ["only"])
