"""Bad input at every entry point: one line naming the field or file:line, exit code 2, no traceback,
nothing half-written; and valid but unusual input (BOM, CRLF, trailing blank lines, tabs in quoted
fields) that must simply work. The table of cases and outcomes is in docs/reliability.md.

Each case builds its own broken input under ``tmp_path`` and runs the command in-process
(``python -m pipeline ...`` through `pipeline.__main__.main`, ``python -m search.run`` through
`search.run.main`); no case trains for more than a moment, since every check comes before the work.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.__main__ import main as pipeline_cli
from pipeline.config import CorpusSource, TaskSource
from pipeline.corpus import read_corpus
from pipeline.data import load_task
from pipeline.textfile import MAX_LINE_BYTES

TOPIC = "index_id\tcategory\ttext\n1\tsport\tIl-logħba kienet tajba\n2\thealth\tIt-tabib qal hekk\n3\tsport\tRebħu l-kampjonat\n"
CONLLU = ("# sent_id = 1\n1\tIl-\t_\tDET\t_\t_\t2\tdet\t_\t_\n2\tktieb\t_\tNOUN\t_\t_\t0\troot\t_\t_\n\n"
          "# sent_id = 2\n1\tIva\t_\tINTJ\t_\t_\t0\troot\t_\t_\n\n")


class Inputs:
    """Builds broken and valid inputs under one temporary folder."""

    def __init__(self, tmp: Path, model: Path, corpus: Path):
        self.tmp, self.model, self.corpus = tmp, model, corpus

    def path(self, name: str) -> Path:
        return self.tmp / name

    def folder(self, name: str, files: dict[str, str | bytes]) -> Path:
        folder = self.tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        for file, text in files.items():
            target = folder / file
            if isinstance(text, bytes):
                target.write_bytes(text)
            else:
                target.write_text(text, encoding="utf-8")
        return folder

    def topic(self, **files: str | bytes) -> Path:
        """A topic-task folder: good train/dev/test TSVs, with ``files`` replacing some of them."""
        return self.folder("topic", {"train.tsv": TOPIC, "dev.tsv": TOPIC, "test.tsv": TOPIC,
                                     **{k.replace("_", "."): v for k, v in files.items()}})

    def pos(self, **files: str | bytes) -> Path:
        return self.folder("pos", {"train.conllu": CONLLU, "dev.conllu": CONLLU, "test.conllu": CONLLU,
                                   **{k.replace("_", "."): v for k, v in files.items()}})

    def text(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    def broken_model(self, change) -> Path:
        """A copy of the tiny model with ``change(folder)`` applied."""
        folder = self.tmp / "model"
        shutil.copytree(self.model, folder)
        change(folder)
        return folder


def evaluate(model, data, task: str = "topic", *extra: str) -> list[str]:
    return ["evaluate", "--model", str(model), "--task", task, "--data", str(data), "--seeds", "1", "--epochs", "1",
            "--max-train-examples", "4", "--max-eval-examples", "4", *extra]


def prune(inputs: Inputs, corpus, ffn: str = "8") -> list[str]:
    return ["prune", "--model", str(inputs.model), "--ffn", ffn, "--corpus", str(corpus), "--out", str(inputs.path("out"))]


def truncate(model, hidden: str = "16", out=None) -> list[str]:
    return ["truncate", "--model", str(model), "--hidden", hidden, "--out", str(out or Path(model).parent / "out")]


def _model_json(folder: Path, name: str, update: dict) -> None:
    data = json.loads((folder / name).read_text())
    (folder / name).write_text(json.dumps({**data, **update}))


def _truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])


def _remote_code(folder: Path) -> None:
    (folder / "evil.py").write_text(f"open({str(folder / 'RAN')!r}, 'w').write('code ran')\n")
    _model_json(folder, "config.json", {"auto_map": {"AutoConfig": "evil.EvilConfig"}})


def _pickled_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _bigger_tokenizer(folder: Path) -> None:
    _model_json(folder, "config.json", {"vocab_size": 100})


# id -> (inputs -> (argv, expected text of the error line, paths that must not exist afterwards))
PIPELINE_CASES = {
    # ---- task files, each format
    "task folder missing": lambda i: (evaluate(i.model, i.path("nope")), "nope: not a folder", []),
    "task train file missing": lambda i: (evaluate(i.model, i.folder("t", {"dev.tsv": TOPIC, "test.tsv": TOPIC})),
                                          "no train file", []),
    "task split empty": lambda i: (evaluate(i.model, i.topic(test_tsv="\n\n")), "test split is empty", []),
    "tsv column does not exist": lambda i: (evaluate(i.model, i.topic(), "topic", "--text-column", "sentence"),
                                            "train.tsv:1: no column named 'sentence'; the header has 'index_id', "
                                            "'category', 'text'", []),
    "tsv column index out of range": lambda i: (evaluate(i.model, i.topic(), "topic", "--label-column", "7"),
                                                "train.tsv:1: label_column 7 is out of range: the file has 3", []),
    "tsv ragged row": lambda i: (evaluate(i.model, i.topic(train_tsv=TOPIC + "4\tsport\tone\textra\n")),
                                 "train.tsv:5: row has 4 field(s) where the first row has 3", []),
    "csv invalid utf-8": lambda i: (evaluate(i.model, i.folder("s", {
        "train.csv": "1,tajjeb\n0,".encode() + b"\xff\xfe hazin\n", "dev.csv": "1,a\n", "test.csv": "1,a\n"}), "sentiment"),
        "train.csv:2: not UTF-8 text (byte 0xff", []),
    "csv binary file": lambda i: (evaluate(i.model, i.folder("s", {
        "train.csv": b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "dev.csv": "1,a\n", "test.csv": "1,a\n"}), "sentiment"),
        "train.csv:1: binary data (a NUL byte", []),
    "csv line over 1 MB": lambda i: (evaluate(i.model, i.folder("s", {
        "train.csv": "1,a\n0," + "x" * (MAX_LINE_BYTES + 10) + "\n", "dev.csv": "1,a\n", "test.csv": "1,a\n"}),
        "sentiment"), "train.csv:2: line is longer than 1 MiB", []),
    "csv unseen dev label": lambda i: (evaluate(i.model, i.folder("s", {
        "train.csv": "1,a\n0,b\n", "dev.csv": "2,c\n", "test.csv": "1,a\n"}), "sentiment"),
        "dev.csv: label '2' does not occur in train", []),
    "csv empty label": lambda i: (evaluate(i.model, i.folder("s", {
        "train.csv": "1,a\n,b\n", "dev.csv": "1,a\n", "test.csv": "1,a\n"}), "sentiment"), "train.csv:2: empty label", []),
    "conllu too few columns": lambda i: (evaluate(i.model, i.pos(train_conllu=CONLLU.replace("\t_\t_\t0\troot\t_\t_", "", 1)),
                                                  "pos"), "train.conllu:3: CoNLL-U line has 4 tab-separated columns", []),
    "conllu sentence without tags": lambda i: (evaluate(i.model, i.pos(dev_conllu=CONLLU.replace("\tDET\t", "\t_\t")), "pos"),
                                               "dev.conllu:2: token 'Il-' has no tag (column 4 is '_')", []),
    "conllu invalid utf-8": lambda i: (evaluate(i.model, i.pos(test_conllu=CONLLU.encode() + b"1\t\xc3(\t_\tX\t_\t_\t0\t_\t_\t_\n"),
                                                "pos"), "test.conllu:8: not UTF-8 text (byte 0xc3", []),
    "conllu non-integer id": lambda i: (evaluate(i.model, i.pos(train_conllu=CONLLU.replace("1\tIva", "x\tIva")), "pos"),
                                        "train.conllu:6: CoNLL-U ID 'x' is not an integer", []),
    "conll sentence without tags": lambda i: (evaluate(i.model, i.folder("n", {
        "train.txt": "Ġużeppi B-PER\nmar O\n\n", "dev.txt": "Ġużeppi\nmar\n", "test.txt": "Ġużeppi B-PER\n"}), "ner"),
        "dev.txt:1: expected a token and a tag", []),
    "conll tag column out of range": lambda i: (evaluate(i.model, i.folder("n", {
        f"{s}.txt": "Ġużeppi B-PER\n" for s in ("train", "dev", "test")}), "ner", "--tag-column", "5"),
        "train.txt:1: line has 2 column(s); token column 0 and tag column 5", []),
    "jsonl invalid line": lambda i: (evaluate(i.model, i.folder("j", {
        "train.jsonl": '{"text": "a", "label": 1}\n{"text": "b", "label": 0\n', "dev.jsonl": "", "test.jsonl": ""}),
        "sentiment"), "train.jsonl:2: not valid JSON", []),
    "jsonl field does not exist": lambda i: (evaluate(i.model, i.folder("j", {
        f"{s}.jsonl": '{"sentence": "a", "y": 1}\n' for s in ("train", "dev", "test")}), "sentiment"),
        "train.jsonl:1: no text/label fields among ['sentence', 'y']", []),
    "task format unknown": lambda i: (evaluate(i.model, i.folder("d", {f"{s}.dat": "x" for s in ("train", "dev", "test")})),
                                      "cannot tell the format from the file name", []),
    "task format wrong for the task": lambda i: (evaluate(i.model, i.topic(), "topic", "--format", "conllu"),
                                                 "format 'conllu' does not fit a classification task", []),
    # ---- corpus files
    "corpus empty": lambda i: (prune(i, i.text("c.txt", "\n \n\n")), "corpus is empty", ["out"]),
    "corpus missing": lambda i: (prune(i, i.path("none.txt")), "none.txt: corpus not found", ["out"]),
    "corpus binary": lambda i: (prune(i, i.text("c.txt", bytes(range(256)) * 4)), "c.txt:1: binary data", ["out"]),
    "corpus invalid utf-8": lambda i: (prune(i, i.text("c.txt", "Bonġu\n".encode() + b"caf\xe9\n")),
                                       "c.txt:2: not UTF-8 text (byte 0xe9", ["out"]),
    "corpus jsonl line over 1 MB": lambda i: (prune(i, i.text("c.jsonl", '{"text": "a"}\n{"text": "'
                                                           + "kelma " * (MAX_LINE_BYTES // 5) + '"}\n')),
                                              "c.jsonl:2: line is longer than 1 MiB", ["out"]),
    "corpus jsonl without the key": lambda i: (prune(i, i.text("c.jsonl", '{"text": "a"}\n{"content": "b"}\n')),
                                               "c.jsonl:2: JSON line without key 'text'", ["out"]),
    "corpus csv without the column": lambda i: (prune(i, i.text("c.csv", "id,sentence\n1,a\n")),
                                                "c.csv:1: no column 'text'", ["out"]),
    "corpus parseme without tokens": lambda i: (prune(i, i.text("c.parsemetsv", "1\tIl-\n2\n")),
                                                "c.parsemetsv:2: not PARSEME-TSV", ["out"]),
    # ---- model directories
    "model without config.json": lambda i: (evaluate(i.broken_model(lambda f: (f / "config.json").unlink()), i.topic()),
                                            "directory has no config.json", []),
    "model without tokenizer": lambda i: (evaluate(i.broken_model(lambda f: (f / "tokenizer.json").unlink()), i.topic()),
                                          "no tokenizer (tokenizer.json", []),
    "model with truncated safetensors": lambda i: (truncate(i.broken_model(_truncate_weights)),
                                                   "model.safetensors: truncated", ["out"]),
    "model with unknown model_type": lambda i: (evaluate(i.broken_model(lambda f: _model_json(f, "config.json", {
        "model_type": "gpt9"})), i.topic()), "config.json: model_type 'gpt9' is not supported", []),
    "model with invalid config.json": lambda i: (truncate(i.broken_model(lambda f: (f / "config.json").write_text('{"a": '))),
                                                 "config.json:1: not valid JSON", ["out"]),
    "model with pickled weights only": lambda i: (truncate(i.broken_model(_pickled_only)),
                                                  "holds only pickled weights (pytorch_model.bin)", ["out"]),
    "model without weights": lambda i: (truncate(i.broken_model(lambda f: (f / "model.safetensors").unlink())),
                                        "no weights (model.safetensors)", ["out"]),
    "model asking to run its code": lambda i: (truncate(i.broken_model(_remote_code)),
                                               "auto_map asks to run the folder's own Python code", ["out", "model/RAN"]),
    "model with a bigger tokenizer": lambda i: (evaluate(i.broken_model(_bigger_tokenizer), i.topic()),
                                                "the tokenizer has 300 tokens but the model's vocab_size is 100", []),
    "model path is a file": lambda i: (truncate(i.text("model.txt", "x")), "model.txt: not a directory", ["out"]),
    # ---- stage commands: sizes and settings out of range, --out
    "truncate hidden not divisible": lambda i: (truncate(i.model, "30", i.path("o")), "not divisible by num_attention_heads=4", ["o"]),
    "truncate hidden 0": lambda i: (truncate(i.model, "0", i.path("o")), "hidden size 0 must be between 4 and", ["o"]),
    "truncate hidden too large": lambda i: (truncate(i.model, "64", i.path("o")), "hidden size 64 must be between 4 and the model's 32", ["o"]),
    "prune ffn 0": lambda i: (prune(i, i.corpus, "0"), "FFN size 0 must be between 1", ["out"]),
    "prune ffn too large": lambda i: (prune(i, i.corpus, "99"), "FFN size 99 must be between 1 and the model's 37", ["out"]),
    "distill layers 0": lambda i: (["distill", "--teacher", str(i.model), "--layers", "0", "--corpus", str(i.corpus),
                                    "--out", str(i.path("o"))], "student layers 0 must be between 1", ["o"]),
    "distill batch size 0": lambda i: (["distill", "--teacher", str(i.model), "--layers", "2", "--corpus", str(i.corpus),
                                        "--batch-size", "0", "--out", str(i.path("o"))], "batch_size must be at least 1", ["o"]),
    "adapt negative lr": lambda i: (["adapt", "--model", str(i.model), "--corpus", str(i.corpus), "--lr", "-1",
                                     "--out", str(i.path("o"))], "lr must be positive, got -1.0", ["o"]),
    "trim-vocab size 0": lambda i: (["trim-vocab", "--model", str(i.model), "--corpus", str(i.corpus), "--vocab-size", "0",
                                     "--out", str(i.path("o"))], "vocabulary size 0 leaves no room", ["o"]),
    "trim-vocab size too large": lambda i: (["trim-vocab", "--model", str(i.model), "--corpus", str(i.corpus),
                                             "--vocab-size", "999", "--out", str(i.path("o"))], "larger than the model's 300", ["o"]),
    "evaluate bad seeds": lambda i: (evaluate(i.model, i.topic(), "topic", "--seeds", "one"), "--seeds 'one'", []),
    "option not a number": lambda i: (truncate(i.model, "wide", i.path("o")), "argument --hidden: invalid int value", ["o"]),
    "required option missing": lambda i: (["truncate", "--model", str(i.model)], "required: --hidden, --out", []),
    "out is an existing file": lambda i: (truncate(i.model, "16", i.text("taken", "keep me")), "is an existing file", []),
    "out is a non-empty folder": lambda i: (truncate(i.model, "16", i.folder("full", {"notes.txt": "keep me"})),
                                            "the folder exists and is not empty", []),
    "out under a file": lambda i: (prune(i, i.corpus) [:-1] + [str(i.text("f", "x") / "o")], "is a file, not a folder", []),
    "trial plan invalid json": lambda i: (["trial", str(i.text("plan.json", '{"teacher": '))], "plan.json:1: invalid JSON", []),
    "trial plan unknown key": lambda i: (["trial", str(i.text("plan.json", json.dumps({"teacher": "x", "candidat": {}})))],
                                         "plan: unknown key 'candidat'", []),
    "trial out is a folder": lambda i: (["trial", str(i.text("plan.json", "{}")), "--out", str(i.folder("res", {}))],
                                        "is a folder; give a file name", []),
}


@pytest.fixture
def inputs(tmp_path, tiny_xlmr, shared_data) -> Inputs:
    return Inputs(tmp_path, tiny_xlmr, shared_data / "mt" / "raw-extra" / "flores" / "dev.mlt_Latn")


def assert_one_line_exit_2(code: int, err: str, expected: str) -> None:
    """Exit code 2 and a stderr of exactly one line: ``error: ...`` holding ``expected``."""
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"stderr is not one line:\n{err}"
    assert lines[0].startswith("error: ") and expected in lines[0], err


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``: a folder as ("dir",), a file as ("file", size, mtime)."""
    tree = {}
    for path in root.rglob("*"):
        stat = path.lstat()
        tree[str(path.relative_to(root))] = ("dir",) if path.is_dir() else ("file", stat.st_size, stat.st_mtime_ns)
    return tree


def assert_nothing_written(before: dict[str, tuple], after: dict[str, tuple]) -> None:
    added = sorted(set(after) - set(before))
    changed = sorted(path for path in set(after) & set(before) if after[path] != before[path])
    removed = sorted(set(before) - set(after))
    assert (added, changed, removed) == ([], [], []), f"written: {added}, changed: {changed}, removed: {removed}"


@pytest.fixture
def process_logging():
    """Log lines go to stderr as in a real process (`pipeline.logs.setup_logging`; under pytest its
    ``basicConfig`` finds pytest's handlers and adds none), so a stray line breaks the one-line rule."""
    import logging
    import sys

    class ToStderr(logging.StreamHandler):
        @property
        def stream(self):
            return sys.stderr  # capsys's, whenever a line is written

        @stream.setter
        def stream(self, value):
            pass

    root = logging.getLogger()
    handler, level = ToStderr(), root.level
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def temp_here(tmp_path, monkeypatch):
    """The process's temporary folder moved under ``tmp_path``, so that a temporary file counts as written."""
    import tempfile

    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("case", PIPELINE_CASES, ids=list(PIPELINE_CASES))
def test_pipeline_command_bad_input(case, inputs, temp_here, process_logging, capsys):
    argv, expected, untouched = PIPELINE_CASES[case](inputs)
    before = snapshot(inputs.tmp)
    try:
        code = pipeline_cli(argv)
    except SystemExit as exit_:  # argparse's errors exit, as they do in a real process
        code = exit_.code
    _, err = capsys.readouterr()
    assert_one_line_exit_2(code, err, expected)
    for name in untouched:
        assert not inputs.path(name).exists(), f"{name} was written"
    assert_nothing_written(before, snapshot(inputs.tmp))


# ---------------------------------------------------------------------------- valid but unusual input


def test_bom_crlf_trailing_blank_lines_and_tabs_in_quotes_are_read(tmp_path):
    bom = "\ufeff"
    tsv = (bom + 'index_id\tcategory\ttext\r\n1\tsport\t"a\ttabbed\tfield"\r\n2\thealth\t"two\r\nlines"\r\n\r\n\r\n')
    for split in ("train", "dev", "test"):
        (tmp_path / "topic").mkdir(exist_ok=True)
        (tmp_path / "topic" / f"{split}.tsv").write_text(tsv, encoding="utf-8", newline="")
    data = load_task("topic", TaskSource(str(tmp_path / "topic")))
    assert data.train.inputs == ["a\ttabbed\tfield", "two\r\nlines"] and data.labels == ("health", "sport")
    conllu = bom + CONLLU.replace("\n", "\r\n") + "\r\n\r\n"
    for split in ("train", "dev", "test"):
        (tmp_path / "pos").mkdir(exist_ok=True)
        (tmp_path / "pos" / f"{split}.conllu").write_text(conllu, encoding="utf-8", newline="")
    pos = load_task("pos", TaskSource(str(tmp_path / "pos")))
    assert pos.train.inputs == [["Il-", "ktieb"], ["Iva"]] and pos.labels == ("DET", "INTJ", "NOUN")
    ner = bom + "Ġużeppi\tB-PER\r\nmar\tO\r\n\r\n\r\n"
    for split in ("train", "dev", "test"):
        (tmp_path / "ner").mkdir(exist_ok=True)
        (tmp_path / "ner" / f"{split}.txt").write_text(ner, encoding="utf-8", newline="")
    assert load_task("ner", TaskSource(str(tmp_path / "ner"))).train.targets == [["B-PER", "O"]]
    jsonl = bom + '{"text": "iva", "label": 1}\r\n{"text": "le", "label": 0}\r\n\r\n'
    for split in ("train", "dev", "test"):
        (tmp_path / "js").mkdir(exist_ok=True)
        (tmp_path / "js" / f"{split}.jsonl").write_text(jsonl, encoding="utf-8", newline="")
    assert load_task("sentiment", TaskSource(str(tmp_path / "js"))).train.inputs == ["iva", "le"]
    (tmp_path / "corpus.txt").write_text(bom + "Bonġu\r\nSaħħa\r\n\r\n", encoding="utf-8", newline="")
    assert read_corpus(str(tmp_path / "corpus.txt")) == ["Bonġu", "Saħħa"]
    (tmp_path / "corpus.csv").write_text(bom + 'text\r\n"a\tb"\r\n\r\n', encoding="utf-8", newline="")
    assert read_corpus(CorpusSource(str(tmp_path / "corpus.csv"))) == ["a\tb"]


def test_unusual_files_evaluate_end_to_end(tmp_path, tiny_xlmr, capsys):
    """The command a user runs on a BOM + CRLF TSV with a trailing blank line reports a score, exit 0."""
    tsv = "\ufeff" + TOPIC.replace("\n", "\r\n") + "\r\n"
    folder = tmp_path / "topic"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text(tsv, encoding="utf-8", newline="")
    assert pipeline_cli(evaluate(tiny_xlmr, folder, "topic", "--out", str(tmp_path / "o"))) == 0
    result = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert result["sizes"] == {"train": 3, "dev": 3, "test": 3} and 0 <= result["mean"] <= 1


# ---------------------------------------------------------------------------- the search: store, folders, spec


def make_read_only(path: Path) -> None:
    """A folder or file nobody may write, root included (``chattr +i`` for root, ``chmod`` otherwise)."""
    import os
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555 if path.is_dir() else 0o444)


def make_writable(path: Path) -> None:
    import os
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture
def read_only(tmp_path):
    made = []

    def make(path: Path) -> Path:
        make_read_only(path)
        made.append(path)
        try:  # a filesystem without immutable files or permissions would make the case meaningless
            if path.is_dir():
                path.joinpath(".probe").touch()
            else:
                path.open("ab").close()
        except OSError:
            pass
        else:
            pytest.skip("cannot make a read-only folder here")
        return path

    yield make
    for path in made:
        make_writable(path)


def _search_spec(tmp_path: Path, yaml_extra: str = "") -> Path:
    from tests.search.fakes import write_spec

    return write_spec(tmp_path, extra=yaml_extra)


def _evil_teacher(tmp_path: Path, spec: Path) -> None:
    teacher = tmp_path / "teacher"
    (teacher / "evil.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w')\n")
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.Evil"}}))


def _after(*effects, then):
    """``then``, once every effect (called for its side effect on the case's files) has run."""
    for effect in effects:
        effect()
    return then


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _file(path: Path, content: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


# id -> (tmp_path, spec, read_only) -> (argv after SPEC, expected text of the error line)
SEARCH_CASES = {
    "tracking folder read-only": lambda t, s, ro: (
        _after(lambda: ro(_folder(t / "mlflow")), then=[]), f"mlflow.tracking_uri: {t / 'mlflow'}: cannot write there"),
    "tracking database read-only": lambda t, s, ro: (
        _after(lambda: ro(_file(t / "mlflow" / "mlflow.db", "")), then=[]), "mlflow.db: cannot write the database"),
    "tracking folder under a file": lambda t, s, ro: (
        _after(lambda: _file(t / "afile"), then=["--set", f"mlflow.tracking_uri=sqlite:///{t / 'afile' / 'mlflow.db'}"]),
        f"mlflow.tracking_uri: {t / 'afile'} is a file, not a folder"),
    "tracking server unreachable": lambda t, s, ro: (["--set", "mlflow.tracking_uri=http://127.0.0.1:9"],
                                                     "mlflow.tracking_uri: http://127.0.0.1:9: no tracking server answers"),
    "tracking uri unknown scheme": lambda t, s, ro: (["--set", "mlflow.tracking_uri=nosuch://store"],
                                                     "mlflow.tracking_uri: nosuch://store: cannot open the tracking store"),
    "artifact folder read-only": lambda t, s, ro: (
        _after(lambda: ro(_folder(t / "art")), then=["--set", f"mlflow.artifact_location={t / 'art'}"]),
        f"mlflow.artifact_location: {t / 'art'}: cannot write there"),
    "storage folder read-only": lambda t, s, ro: (
        _after(lambda: ro(_folder(t / "ray")), then=[]), f"search.storage_path: {t / 'ray'}: cannot write there"),
    "cache folder under a file": lambda t, s, ro: (
        _after(lambda: _file(t / "afile"), then=["--set", f"search.cache_dir={t / 'afile' / 'stages'}"]),
        f"search.cache_dir: {t / 'afile' / 'stages'}: {t / 'afile'} is a file, not a folder"),
    "spec with a python yaml tag": lambda t, s, ro: (
        _after(lambda: s.write_text(s.read_text() + f"\nx: !!python/object/apply:os.system ['touch {t / 'RAN'}']\n"),
               then=[]), "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    "teacher asking to run its code": lambda t, s, ro: (
        _after(lambda: _evil_teacher(t, s), then=[]), f"teacher.model: {t / 'teacher' / 'config.json'}: auto_map asks to run"),
    "teacher with pickled weights only": lambda t, s, ro: (
        _after(lambda: _file(t / "teacher" / "pytorch_model.bin", "pickle"), then=[]),
        f"teacher.model: {t / 'teacher'}: holds only pickled weights (pytorch_model.bin)"),
    "stage setting out of range": lambda t, s, ro: (["--set", "distill.batch_size=0"],
                                                   "distill: batch_size must be at least 1, got 0 (from --set"),
    "unknown option": lambda t, s, ro: (["--dry-rnu"], "python -m search.run: unrecognized arguments: --dry-rnu"),
    "device memory that does not parse": lambda t, s, ro: (
        ["--device-memory", "80 gigs"],
        "argument --device-memory: '80 gigs': expected a size such as 80GiB, 24GB or 16000MiB"),
    "first stage cannot fit the device at batch 1": lambda t, s, ro: (
        ["--device-memory", "1MiB"], "spec.yaml: evaluation.pos: evaluate (teacher) needs about 1.32 MiB at batch_size 1 "
                                     "x 64 tokens (fp32), more than --device-memory 1.00 MiB; lower evaluation.pos.max_length"),
    "resume with a changed spec": lambda t, s, ro: (
        _after(lambda: _stored_search(s, "search.num_samples=3"), then=["--resume", "--set", "space.ffn=[16]"]),
        "--resume: the last search of this spec file"),
}


def _stored_search(spec_file: Path, *overrides: str) -> None:
    """What a search started from ``spec_file`` with ``overrides`` leaves behind for a resume to find."""
    from search.driver import experiment_name, record_search
    from search.spec import load_spec

    spec = load_spec(spec_file, overrides)
    storage = Path(spec.search.storage_path)
    record_search(storage / experiment_name(spec, storage, resume=False), spec, str(spec_file), overrides)


@pytest.mark.parametrize("case", SEARCH_CASES, ids=list(SEARCH_CASES))
def test_search_bad_input(case, tmp_path, read_only, temp_here, process_logging, capsys, monkeypatch):
    """The spec's output and cache roots (Ray's storage, the stage cache, the MLflow store) all lie under
    ``tmp_path``, as does the temporary folder: no file or folder there may appear, change or go."""
    from search.run import main as search_cli

    from tests.search.backend import use_fake_trials

    use_fake_trials("tests.search.fakes:fake_trial", monkeypatch.setattr)
    spec = _search_spec(tmp_path)
    extra, expected = SEARCH_CASES[case](tmp_path, spec, read_only)
    before = snapshot(tmp_path)
    try:
        code = search_cli([str(spec), *extra])
    except SystemExit as exit_:  # argparse's errors exit, as they do in a real process
        code = exit_.code
    _, err = capsys.readouterr()
    assert_one_line_exit_2(code, err, expected)
    assert not (tmp_path / "RAN").exists(), "code from the input ran"
    assert_nothing_written(before, snapshot(tmp_path))
