"""Task loaders: every real file to its exact counts, each local format, the hub mapping, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import TaskSource
from pipeline.data import load_task, parse_hub_id, split_files
from pipeline.errors import UsageError

UPOS = "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()


# ---------------------------------------------------------------- real data


def test_mt_pos_conllu(shared_data):
    data = load_task("pos", TaskSource(str(shared_data / "mt" / "pos")))
    assert data.sizes == {"train": 1123, "dev": 433, "test": 518}
    assert list(data.labels) == UPOS
    assert sum(len(t) for t in data.train.inputs) == 22880
    assert sum(len(t) for t in data.dev.inputs) == 10209
    assert sum(len(t) for t in data.test.inputs) == 11073
    assert data.train.inputs[0][:3] == ["Illum", "waranofsinhar", "il-"]
    assert data.train.targets[0][:3] == ["ADV", "ADV", "DET"]


def test_mt_topic_tsv_with_header(shared_data):
    data = load_task("topic", TaskSource(str(shared_data / "mt" / "topic")))
    assert data.sizes == {"train": 701, "dev": 99, "test": 204}
    expected = sorted((shared_data / "mt" / "topic" / "labels.txt").read_text().split())
    assert list(data.labels) == expected
    assert data.train.targets[0] == "geography"
    assert data.train.inputs[0].startswith("It-Turkija hija mdawra")
    assert data.train.targets.count("science/technology") == 176


def test_mt_sentiment_headerless_csv(shared_data):
    data = load_task("sentiment", TaskSource(str(shared_data / "mt" / "sentiment")))
    assert data.sizes == {"train": 595, "dev": 85, "test": 171}
    assert data.labels == ("0", "1")
    assert data.train.targets.count("0") == 413 and data.test.targets.count("1") == 60
    assert sum("\n" in text for text in data.train.inputs) == 2  # records with line breaks inside


def test_sw_ner_columns(shared_data):
    data = load_task("ner", TaskSource(str(shared_data / "sw" / "ner")))
    assert data.sizes == {"train": 2109, "dev": 300, "test": 604}
    assert set(data.labels) == {"O"} | {f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG", "DATE")}
    assert data.train.inputs[0][:2] == ["Wizara", "ya"] and data.train.targets[0][:2] == ["B-ORG", "I-ORG"]


# ---------------------------------------------------------------- local formats


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


CONLLU = """# sent_id = 1
# text = Ta' l-ktieb
1-2\tTal\t_\t_\t_\t_\t_\t_\t_\t_
1\tTa'\t_\tADP\t_\t_\t0\troot\t_\t_
2\tl-\t_\tDET\t_\t_\t3\tdet\t_\t_
2.1\tx\t_\tX\t_\t_\t_\t_\t_\t_
3\tktieb\t_\tNOUN\t_\t_\t1\tobj\t_\t_

1\tIva\t_\tINTJ\t_\t_\t0\troot\t_\t_

"""


def test_conllu_skips_ranges_and_empty_nodes(tmp_path):
    folder = write(tmp_path, {f"x-ud-{s}.conllu": CONLLU for s in ("train", "dev", "test")})
    data = load_task("pos", TaskSource(str(folder)))
    assert data.train.inputs == [["Ta'", "l-", "ktieb"], ["Iva"]]
    assert data.train.targets == [["ADP", "DET", "NOUN"], ["INTJ"]]


def test_conllu_bad_line_names_file_and_line(tmp_path):
    bad = CONLLU.replace("3\tktieb\t_\tNOUN", "3 ktieb NOUN")
    folder = write(tmp_path, {"train.conllu": bad, "dev.conllu": CONLLU, "test.conllu": CONLLU})
    with pytest.raises(UsageError, match=r"train\.conllu:7: CoNLL-U line has"):
        load_task("pos", TaskSource(str(folder)))


def test_column_file_with_index_comments_and_tabs(tmp_path):
    text = "# comment\n1\tJohn\tx\tB-PER\n2\tSmith\tx\tI-PER\n3\tran\tx\tO\n\n1\tRome\tx\tB-LOC\n"
    folder = write(tmp_path, {"train.txt": text, "valid.txt": text, "test.txt": text})
    data = load_task("ner", TaskSource(str(folder)))
    assert data.train.inputs == [["John", "Smith", "ran"], ["Rome"]]
    assert data.train.targets == [["B-PER", "I-PER", "O"], ["B-LOC"]]
    chosen = load_task("ner", TaskSource(str(folder), token_column="2", tag_column="3"))
    assert chosen.train.inputs[0] == ["x", "x", "x"]


def test_column_file_space_separated_and_docstart(tmp_path):
    text = "-DOCSTART- O\n\nJohn   B-PER\nran O\n\n\n\nRome B-LOC\n"
    folder = write(tmp_path, {"train.iob": text, "dev.iob": text, "test.iob": text})
    data = load_task("ner", TaskSource(str(folder)))
    assert data.train.inputs == [["John", "ran"], ["Rome"]]


def test_column_file_one_column_is_an_error(tmp_path):
    good = "John B-PER\n"
    folder = write(tmp_path, {"train.txt": good, "dev.txt": "John B-PER\n\nMary\n", "test.txt": good})
    with pytest.raises(UsageError, match=r"dev\.txt:3: expected a token and a tag"):
        load_task("ner", TaskSource(str(folder)))


def test_csv_quoted_fields_and_newlines(tmp_path):
    text = '1,"good, very ""good"""\n0,"bad\nacross lines"\n1,fine\n'
    folder = write(tmp_path, {"train.csv": text, "dev.csv": text, "test.csv": text})
    data = load_task("sentiment", TaskSource(str(folder)))
    assert data.train.inputs == ['good, very "good"', "bad\nacross lines", "fine"]
    assert data.train.targets == ["1", "0", "1"]


def test_tsv_header_by_name_and_index(tmp_path):
    text = 'id\ttopic\tsentence\n1\tsports\t"a ""quoted"" start"\n2\tpolitics\tvote\n'
    folder = write(tmp_path, {"my-train.tsv": text, "my-dev.tsv": text, "my-test.tsv": text})
    by_name = load_task("topic", TaskSource(str(folder), text_column="sentence", label_column="topic"))
    assert by_name.train.inputs == ['a "quoted" start', "vote"]
    assert by_name.labels == ("politics", "sports")
    by_index = load_task("topic", TaskSource(str(folder), text_column="2", label_column="1", header=True))
    assert by_index.train.targets == ["sports", "politics"]
    defaults = load_task("topic", TaskSource(str(folder), header=True))  # label = second-last, text = last
    assert defaults.train.targets == ["sports", "politics"]


def test_csv_name_without_header_is_an_error(tmp_path):
    folder = write(tmp_path, {f"{s}.csv": "1,a\n" for s in ("train", "dev", "test")})
    with pytest.raises(UsageError, match="by name but the file has no header"):
        load_task("sentiment", TaskSource(str(folder), text_column="text"))


def test_csv_short_row_names_line(tmp_path):
    folder = write(tmp_path, {"train.csv": 'label,text\n1,"two\nlines"\n0\n', "dev.csv": "1,a\n", "test.csv": "1,a\n"})
    with pytest.raises(UsageError, match=r"train\.csv:4: row has 1 field"):
        load_task("sentiment", TaskSource(str(folder)))


def test_jsonl_both_kinds_and_integer_labels(tmp_path):
    rows = [{"text": "yes", "label": 1}, {"text": "no", "label": 0}]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    folder = write(tmp_path / "cls", {f"{s}.jsonl": lines for s in ("train", "validation", "test")})
    data = load_task("sentiment", TaskSource(str(folder)))
    assert data.train.targets == ["1", "0"] and data.labels == ("0", "1")
    tok = json.dumps({"tokens": ["a", "b"], "upos": ["DET", "NOUN"]}) + "\n"
    folder = write(tmp_path / "tok", {f"{s}.jsonl": tok for s in ("train", "dev", "test")})
    assert load_task("pos", TaskSource(str(folder))).train.targets == [["DET", "NOUN"]]


def test_jsonl_bad_line(tmp_path):
    folder = write(tmp_path, {"train.jsonl": '{"text": "a", "label": 1}\n{oops\n', "dev.jsonl": "", "test.jsonl": ""})
    with pytest.raises(UsageError, match=r"train\.jsonl:2: not valid JSON"):
        load_task("sentiment", TaskSource(str(folder)))


def test_unseen_label_is_named(tmp_path):
    folder = write(tmp_path, {"train.csv": "1,a\n0,b\n", "dev.csv": "1,a\n", "test.csv": "2,c\n"})
    with pytest.raises(UsageError, match=r"test\.csv: label '2' does not occur in train"):
        load_task("sentiment", TaskSource(str(folder)))


def test_empty_split_is_an_error(tmp_path):
    folder = write(tmp_path, {"train.csv": "1,a\n0,b\n", "dev.csv": "1,a\n", "test.csv": "\n"})
    with pytest.raises(UsageError, match="test split is empty"):
        load_task("sentiment", TaskSource(str(folder)))


def test_missing_dev_is_held_out_and_missing_test_is_an_error(tmp_path):
    rows = "".join(f"{i % 2},text {i}\n" for i in range(20))
    folder = write(tmp_path / "a", {"train.csv": rows, "test.csv": rows})
    data = load_task("sentiment", TaskSource(str(folder)))
    assert data.sizes == {"train": 18, "dev": 2, "test": 20}
    folder = write(tmp_path / "b", {"train.csv": rows, "dev.csv": rows, "README.md": "x"})
    with pytest.raises(UsageError, match="no test file"):
        load_task("sentiment", TaskSource(str(folder)))


def test_split_file_names(tmp_path):
    folder = write(tmp_path, {"x-train.tsv": "", "validation.tsv": "", "test.tsv": "", "labels.txt": "", "README": ""})
    assert {k: v.name for k, v in split_files(folder).items()} == {
        "train": "x-train.tsv", "dev": "validation.tsv", "test": "test.tsv"}


def test_unknown_task_and_missing_folder(tmp_path):
    with pytest.raises(UsageError, match="unknown task"):
        load_task("qa", TaskSource(str(tmp_path)))
    with pytest.raises(UsageError, match="not a folder"):
        load_task("pos", TaskSource(str(tmp_path / "nope")))


# ---------------------------------------------------------------- hub datasets (in memory, no download)


def fake_hub(monkeypatch, builder):
    """Replace `datasets.load_dataset` (the hub is out of reach) with one that records its arguments."""
    import datasets

    seen = {}

    def load(name, config=None, **kwargs):
        seen["args"] = (name, config)
        seen["kwargs"] = kwargs
        return builder(datasets)

    monkeypatch.setattr(datasets, "load_dataset", load)
    return seen


def test_hub_ids():
    assert parse_hub_id("hf:unimelb-nlp/wikiann:mt") == ("unimelb-nlp/wikiann", "mt")
    assert parse_hub_id("hf:DGurgurov/maltese_sa") == ("DGurgurov/maltese_sa", None)


def test_hub_wikiann_class_label_names(monkeypatch):
    def build(ds):
        names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
        features = ds.Features({
            "tokens": ds.List(ds.Value("string")),
            "ner_tags": ds.List(ds.ClassLabel(names=names)),
            "langs": ds.List(ds.Value("string")),
            "spans": ds.List(ds.Value("string")),
        })
        row = {"tokens": [["Ġużeppi", "ġie"]], "ner_tags": [[1, 0]], "langs": [["mt", "mt"]], "spans": [["PER: x"]]}
        part = ds.Dataset.from_dict(row, features=features)
        return ds.DatasetDict({"train": part, "validation": part, "test": part})

    seen = fake_hub(monkeypatch, build)
    data = load_task("ner", TaskSource("hf:unimelb-nlp/wikiann:mt"))
    assert seen["args"] == ("unimelb-nlp/wikiann", "mt")
    assert data.train.inputs == [["Ġużeppi", "ġie"]] and data.train.targets == [["B-PER", "O"]]
    assert data.dev.origin == "hf:unimelb-nlp/wikiann:mt[validation]"


def test_hub_universal_dependencies_upos(monkeypatch):
    def build(ds):
        upos = ["NOUN", "PUNCT", "ADP", "NUM", "SYM", "SCONJ", "ADJ", "PART", "DET", "CCONJ", "PROPN", "PRON", "X",
                "_", "ADV", "INTJ", "VERB", "AUX"]
        features = ds.Features({
            "idx": ds.Value("string"), "text": ds.Value("string"), "tokens": ds.List(ds.Value("string")),
            "lemmas": ds.List(ds.Value("string")), "upos": ds.List(ds.ClassLabel(names=upos)),
            "xpos": ds.List(ds.Value("string")),
        })
        part = ds.Dataset.from_dict({"idx": ["1"], "text": ["Il- ktieb"], "tokens": [["Il-", "ktieb"]],
                                     "lemmas": [["_", "_"]], "upos": [[8, 0]], "xpos": [["DEF", "NOUN"]]},
                                    features=features)
        return ds.DatasetDict({"train": part, "validation": part, "test": part})

    seen = fake_hub(monkeypatch, build)
    source = TaskSource("hf:universal-dependencies/universal_dependencies", revision="refs/convert/parquet",
                        data_dir="mt_mudt")
    data = load_task("pos", source)
    assert data.train.targets == [["DET", "NOUN"]]
    assert seen["args"] == ("universal-dependencies/universal_dependencies", None)
    assert seen["kwargs"] == {"split": None, "streaming": False, "revision": "refs/convert/parquet", "data_dir": "mt_mudt"}


def test_hub_sib200_and_sentiment(monkeypatch):
    def sib(ds):
        part = ds.Dataset.from_dict({"index_id": [1, 2], "category": ["travel", "health"], "text": ["a", "b"]})
        return ds.DatasetDict({"train": part, "validation": part, "test": part})

    fake_hub(monkeypatch, sib)
    data = load_task("topic", TaskSource("hf:Davlan/sib200:mlt_Latn"))
    assert data.train.targets == ["travel", "health"] and data.train.inputs == ["a", "b"]

    def sentiment(ds):
        part = ds.Dataset.from_dict({"label": [0, 1, 1, 0] * 5, "text": [f"t{i}" for i in range(20)]})
        return ds.DatasetDict({"train": part, "test": part})  # no validation: held out from train

    fake_hub(monkeypatch, sentiment)
    data = load_task("sentiment", TaskSource("hf:DGurgurov/maltese_sa"))
    assert data.sizes == {"train": 18, "dev": 2, "test": 20} and data.labels == ("0", "1")


def test_hub_missing_columns(monkeypatch):
    def build(ds):
        part = ds.Dataset.from_dict({"sent": ["a"], "y": [1]})
        return ds.DatasetDict({"train": part, "validation": part, "test": part})

    fake_hub(monkeypatch, build)
    with pytest.raises(UsageError, match=r"\[train\] row 0: .*no text/label fields"):
        load_task("sentiment", TaskSource("hf:x/y"))
    data = load_task("sentiment", TaskSource("hf:x/y", text_column="sent", label_column="y"))
    assert data.train.targets == ["1"]


@pytest.mark.parametrize(("message", "expected"), [
    ("Dataset scripts are no longer supported, but found universal_dependencies.py",
     "hf:universal_dependencies:mt_mudt: a script-based dataset (universal_dependencies.py), which datasets 4 and "
     "later no longer run; use a data-file copy of it, its parquet export (source: hf:universal_dependencies, "
     "revision: refs/convert/parquet with data_dir: mt_mudt), or local files"),
    ("Dataset 'openlanguagedata/flores_plus' is a gated dataset on the Hub. You must be authenticated to access it.",
     "a gated dataset: accept its terms on https://huggingface.co/datasets/universal_dependencies, then log in"),
    ("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)\nmore", "cannot load (RuntimeError: Couldn't reach"),
])
def test_hub_failures_are_one_line_with_a_way_out(monkeypatch, message, expected):
    import datasets

    def load(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(datasets, "load_dataset", load)
    with pytest.raises(UsageError) as info:
        load_task("pos", TaskSource("hf:universal_dependencies:mt_mudt"))
    assert expected in str(info.value) and "\n" not in str(info.value)
