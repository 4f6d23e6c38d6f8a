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


def test_skip_and_max_lines_cut_a_window(tmp_path):
    (tmp_path / "c.txt").write_text("".join(f"line {i}\n\n" for i in range(10)))
    assert read_corpus(CorpusSource(str(tmp_path / "c.txt"), skip_lines=3, max_lines=2)) == ["line 3", "line 4"]
    assert read_corpus(CorpusSource(str(tmp_path / "c.txt"), skip_lines=8)) == ["line 8", "line 9"]
    with pytest.raises(UsageError, match="corpus is empty after skipping 10 lines"):
        read_corpus(CorpusSource(str(tmp_path / "c.txt"), skip_lines=10))


class FakeStream:
    """An iterable like a streamed hub split: records one at a time, counting how many were read."""

    def __init__(self, n):
        self.n, self.read, self.column_names = n, 0, None

    def __iter__(self):
        for i in range(self.n):
            self.read += 1
            yield {"content": f"doc {i}" if i % 3 else "", "id": i}


def test_hub_corpus_streams_only_what_it_needs(monkeypatch):
    import datasets

    calls, stream = [], FakeStream(10**6)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or stream)
    source = CorpusSource("hf:cis-lmu/GlotCC-V1:slk-Latn", text_column="content", max_lines=4, skip_lines=2)
    assert read_corpus(source) == ["doc 4", "doc 5", "doc 7", "doc 8"]
    assert calls == [(("cis-lmu/GlotCC-V1", "slk-Latn"), {"split": "train", "streaming": True})]
    assert stream.read == 9  # six non-empty documents, then it stops


def test_hub_corpus_without_cap_is_not_streamed_and_columns_are_checked(monkeypatch):
    import datasets

    class Split(list):
        column_names = ["text", "id"]

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(k) or Split([{"text": "a", "id": 1}]))
    source = CorpusSource("hf:openlanguagedata/flores_plus:mlt_Latn", split="dev", revision="v2", data_dir="x")
    assert read_corpus(source) == ["a"]
    assert calls == [{"split": "dev", "streaming": False, "revision": "v2", "data_dir": "x"}]
    with pytest.raises(UsageError, match=r"no column 'content' \(columns: text, id\)"):
        read_corpus(CorpusSource("hf:a/b", text_column="content"))


def test_a_pos_sentence_planted_in_a_corpus_is_found(shared_data):
    """A POS sentence is a token list; the corpus holds its raw line, spaced differently."""
    from pipeline.config import TaskSource
    from pipeline.corpus import drop_texts, text_key
    from pipeline.data import load_task

    conllu = (shared_data / "mt" / "pos" / "mt_mudt-ud-dev.conllu").read_text(encoding="utf-8")
    raw = next(line.removeprefix("# text = ") for line in conllu.splitlines() if line.startswith("# text = "))
    pos = load_task("pos", TaskSource(str(shared_data / "mt" / "pos")))
    tokens = pos.dev.inputs[0]
    assert " ".join(tokens) != raw  # "Fil- qalba ... Naxxar , Jason": the old comparison missed it
    assert text_key(tokens) == text_key(raw)
    corpus = ["Din hija sentenza oħra.", raw.upper(), "  " + raw.replace(" ", "  ") + " ", "Xi ħaġa oħra."]
    kept, removed = drop_texts(corpus, [x for split in (pos.train, pos.dev, pos.test) for x in split.inputs])
    assert kept == ["Din hija sentenza oħra.", "Xi ħaġa oħra."]
    assert len(removed) == 2
