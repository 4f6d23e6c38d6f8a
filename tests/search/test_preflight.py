"""The preflight (`--check`, and the search before anything trains) on the real Maltese files and on
broken sources: one line per problem, naming the spec field, exit 2."""

from __future__ import annotations

import pytest

from pipeline.errors import UsageError
from search.preflight import PreflightError, preflight
from search.run import main
from search.spec import load_spec
from tests.conftest import local_spec


@pytest.fixture()
def maltese_spec(tmp_path, tiny_xlmr, shared_data):
    """A spec over the real Maltese files (FLORES kept out) with a tiny teacher."""
    mt = shared_data / "mt"

    def write(heldout=str(mt / "raw" / "test.parsemetsv"), tasks=None, teacher=tiny_xlmr) -> str:
        tasks = tasks or {"pos": str(mt / "pos"), "topic": str(mt / "topic"), "sentiment": str(mt / "sentiment")}
        return str(local_spec(tmp_path / "spec.yaml", teacher, mt / "raw" / "train.parsemetsv", heldout, tasks))

    return write


def test_check_summarises_every_source(maltese_spec, capsys):
    assert main([maltese_spec(), "--check"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.splitlines()[-1] == "no problems found"
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "xlmr, 4 layers" in rows["teacher"] and "tokenizer: XLMRobertaTokenizer" in rows["teacher"]
    assert "5,965 lines" in rows["corpus"] and "first: 'Fl-istess ħin" in rows["corpus"]
    assert "1,123 / 433 / 518" in rows["pos"] and " 17: ADJ ADP" in rows["pos"] and "conllu" in rows["pos"]
    assert "701 / 99 / 204" in rows["topic"] and "label 'category'" in rows["topic"]
    assert "595 / 85 / 171" in rows["sentiment"] and "2: 0 1" in rows["sentiment"]


def test_flores_as_held_out_text_is_caught(maltese_spec, shared_data, capsys):
    path = maltese_spec(heldout=str(shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn"))
    assert main([path, "--check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith(f"error: {path}: data.heldout: ") for line in err)
    assert "47 of its lines are dev texts of data.tasks.topic" in err[0]
    assert "90 of its lines are test texts of data.tasks.topic" in err[1]


def write_task(folder, files):
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_broken_task_sources_name_the_field(maltese_spec, tmp_path, capsys):
    rows = "".join(f"{i % 2},text number {i}\n" for i in range(20))
    tasks = {
        "pos": tmp_path / "missing",
        "topic": write_task(tmp_path / "topic", {"train.tsv": "text\tcategory\na\tx\nb\ty\n", "dev.tsv": "text\tcategory\nc\tx\n",
                                                  "test.tsv": "text\tcategory\nd\tz\n"}),
        "sentiment": write_task(tmp_path / "sa", {"train.csv": rows, "dev.csv": "", "test.csv": rows}),
        "ner": write_task(tmp_path / "ner", {"train.jsonl": '{"words": ["a"], "ner_tags": ["O"]}\n',
                                              "test.jsonl": '{"words": ["a"], "ner_tags": ["O"]}\n'}),
    }
    path = maltese_spec(tasks={k: str(v) for k, v in tasks.items()})
    assert main([path, "--check"]) == 2
    out, err = capsys.readouterr()
    problems = [line.removeprefix(f"error: {path}: ") for line in err.splitlines()]
    assert [p.split(":")[0] for p in problems] == ["data.tasks.pos", "data.tasks.topic", "data.tasks.sentiment",
                                                    "data.tasks.ner"]
    assert "not a folder" in problems[0]
    assert "label 'z' does not occur in train" in problems[1]
    assert "the dev split is empty" in problems[2]
    assert "too few examples to hold out a dev split" in problems[3]
    assert "(not loaded: see the problems below)" in out


def test_hub_sources_that_cannot_load_name_the_field_and_the_way_out(maltese_spec, monkeypatch):
    import datasets

    def load(name, config=None, **kwargs):
        if name == "universal_dependencies":
            raise RuntimeError("Dataset scripts are no longer supported, but found universal_dependencies.py")
        raise ConnectionError("Dataset 'openlanguagedata/flores_plus' is a gated dataset on the Hub.")

    monkeypatch.setattr(datasets, "load_dataset", load)
    spec = load_spec(maltese_spec(heldout="hf:openlanguagedata/flores_plus:mlt_Latn",
                                  tasks={"pos": "hf:universal_dependencies:mt_mudt"}))
    report = preflight(spec)
    assert report.problems[0].startswith("data.heldout: hf:openlanguagedata/flores_plus:mlt_Latn: a gated dataset")
    assert "hf auth login" in report.problems[0]
    assert report.problems[1].startswith("data.tasks.pos: hf:universal_dependencies:mt_mudt: a script-based dataset")
    assert "revision: refs/convert/parquet with data_dir: mt_mudt" in report.problems[1]
    with pytest.raises(PreflightError):
        report.raise_problems()


def test_tokenizer_larger_than_the_vocabulary(maltese_spec, tiny_xlmr, tmp_path):
    import json
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_xlmr, teacher)
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "vocab_size": 200}))
    report = preflight(load_spec(maltese_spec(teacher=teacher)))
    assert report.problems == [f"teacher.model: {teacher}: the tokenizer has 300 tokens but the model's vocabulary "
                               "only 200 rows"]


def test_the_search_stops_at_the_preflight_before_training(maltese_spec, tmp_path, monkeypatch):
    import pipeline.trial
    from search.prepare import prepare

    monkeypatch.setattr(pipeline.trial, "prepare_teacher", lambda *a, **k: pytest.fail("trained before the check"))
    spec = load_spec(maltese_spec(tasks={"pos": str(tmp_path / "nowhere")}))
    with pytest.raises(UsageError, match="data.tasks.pos: .*nowhere: not a folder"):
        prepare(spec)


def test_check_says_how_many_tokens_each_trimmed_vocabulary_keeps(maltese_spec, tmp_path, capsys):
    """The corpus holds fewer pieces that reach min_count than a vocabulary of 290 needs: the check
    counts them with the teacher's tokenizer on data.corpus and says what each size keeps."""
    from pipeline import modeling
    from pipeline.corpus import read_corpus
    from pipeline.trim_vocab import count_pieces, kept_specials

    path = maltese_spec()
    spec = load_spec(path, ["space.vocab=[100,290,full]", "trim_vocab.min_count=50"])
    tokenizer = modeling.load_tokenizer(spec.teacher.model)
    lines = read_corpus(spec.data.corpus)
    specials = set(kept_specials(tokenizer))
    reaching = sum(1 for i, c in count_pieces(tokenizer, lines).items() if c >= 50 and i not in specials)
    assert 100 < reaching + len(specials) < 290
    assert main([path, "--check", "--set", "space.vocab=[100,290,full]", "--set", "trim_vocab.min_count=50"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("trim_vocab"))
    assert row == (f"trim_vocab {reaching:,} pieces occur at least 50 times in data.corpus (5,965 lines): space.vocab "
                   f"290 keeps {reaching + len(specials):,}, 100 keeps 100 tokens (with {len(specials)} special tokens)")
