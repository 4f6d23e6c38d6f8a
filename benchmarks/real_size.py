"""Every stage at real size, through the commands a user runs: seconds per step, peak memory, the estimate.

    python benchmarks/real_size.py                  # XLM-R base and mBERT at lengths 128 and 512 (a GPU)
    python benchmarks/real_size.py --tiny           # the same path at tiny shapes, XLM-R: about a minute

Two teachers with random weights and the exact shapes of the real ones: XLM-R base (278,295,186
parameters; a Unigram tokenizer of 250,002 ids) and mBERT (177,974,523; WordPiece, 119,547 ids). Each
tokenizer is trained in-process on the Maltese text of ``../shared/data`` (``--data``) and completed
to the exact size with generated pieces, so every vocabulary-sized tensor has its real size; nothing is
downloaded. Then the paper's path, stage by stage, each a ``python -m pipeline ...`` process as a
user would run it: adapt the teacher, distil to 6 layers, prune the FFN to 2048, truncate the hidden
size to 312, distil again, trim the vocabulary to 40,000, evaluate on POS. Each training stage runs
``--steps`` steps at the batch size of ``specs/maltese.yaml`` (``--spec``) and at each length of
``--lengths`` (128 and 512), or at the largest length whose estimate fits ``--device-memory`` (24 GiB)
when a length does not. ``--estimate-lengths`` adds rows of the estimate alone at further lengths (where a
CPU has not the hours to run them).

Per stage and length: seconds per step (the stage's own timing over its steps: training steps, pruning
batches), wall seconds of the command, the command's peak resident memory (and on CUDA the peak memory
torch allocated), the exact parameter count of the stage's output, and the estimate of `pipeline.memory`
for the same models and settings beside the measured peak. On Linux a command's peak resident memory is
never below the peak of the process that starts it: each row records that floor, and teachers are
built in a process of their own to keep it low. Written as JSON under
``benchmarks/results/`` (``real-size[-tiny]-DATE.json``, never over an earlier file) with the command,
commit, machine and date (`benchmarks.provenance`), and printed as a Markdown table.

Before and after a change: ``--pipeline DIR`` runs the same commands from another checkout (a ``git worktree``
of an earlier commit); options its commands do not have are left out, and each row lists them under
``dropped``. ``--compare BEFORE.json AFTER.json`` prints the two runs' peaks side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.provenance import fresh_path, provenance, write_json  # noqa: E402
from pipeline import memory  # noqa: E402
from pipeline.config import AdaptConfig, DistillConfig, PruneConfig, TaskTraining  # noqa: E402
from pipeline.sizes import config_parameters  # noqa: E402

# (teacher config overrides, vocabulary size, exact parameters): the real teachers' shapes
FAMILIES = {
    "xlmr": ("FacebookAI/xlm-roberta-base", 250_002, 278_295_186),
    "bert": ("google-bert/bert-base-multilingual-cased", 119_547, 177_974_523),
}
# the paper's path: layers, FFN, hidden, vocabulary; tiny: the same steps at tiny sizes
PATH = {"layers": 6, "ffn": 2048, "hidden": 312, "vocab": 40_000}
TINY = {"shape": {"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128},
        "vocab": {"xlmr": 2_000, "bert": 1_500}, "path": {"layers": 2, "ffn": 64, "hidden": 32, "vocab": 800}}


@dataclasses.dataclass
class Settings:
    tiny: bool
    steps: int
    lengths: tuple[int, ...]
    device: str
    device_memory: int
    batches: dict[str, int]  # adapt, distill, prune, truncate, evaluate: the spec's batch sizes
    estimate_lengths: tuple[int, ...] = ()  # lengths only estimated, not run
    pipeline: str | None = None  # the checkout whose `python -m pipeline` runs the stages (None: this one)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (the test's setting)")
    parser.add_argument("--family", choices=("xlmr", "bert", "both"), default=None,
                        help="which teacher (default: both; with --tiny: xlmr)")
    parser.add_argument("--lengths", default=None, help="comma-separated sequence lengths (default 128,512; tiny 32)")
    parser.add_argument("--estimate-lengths", default="",
                        help="comma-separated lengths at which each stage is only estimated, not run")
    parser.add_argument("--steps", type=int, default=3, help="training steps (and pruning batches) per stage")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--device-memory", default="24GiB", help="the largest estimate a stage may run at")
    parser.add_argument("--spec", type=Path, default=REPO / "specs" / "maltese.yaml", help="the batch sizes")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LRL_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--work", type=Path, default=None, help="work folder (default benchmarks/work/real-size[-tiny])")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default: a new file in benchmarks/results)")
    parser.add_argument("--pipeline", type=Path, default=None,
                        help="run the stages from this checkout (an earlier commit's worktree), for before/after")
    parser.add_argument("--show", type=Path, default=None, help="print a result file's table, and nothing else")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"), default=None,
                        help="print two result files' peaks side by side, and nothing else")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(path.read_text()) for path in args.compare)
        print(_compare(before, after))
        return 0
    if args.show:
        print(_table(json.loads(args.show.read_text())))
        return 0
    if args.pipeline and not (args.pipeline / "pipeline" / "__main__.py").is_file():
        parser.error(f"--pipeline {args.pipeline}: no pipeline/__main__.py there")

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    lengths = tuple(int(x) for x in (args.lengths or ("32" if args.tiny else "128,512")).split(","))
    settings = Settings(args.tiny, args.steps, lengths, device, memory.parse_size(args.device_memory),
                        _spec_batches(args.spec), tuple(int(x) for x in args.estimate_lengths.split(",") if x),
                        str(args.pipeline.resolve()) if args.pipeline else None)
    name = "real-size-tiny" if args.tiny else "real-size"
    work = (args.work or REPO / "benchmarks" / "work" / name).resolve()  # commands may run in another checkout
    out = args.out or fresh_path(REPO / "benchmarks" / "results", name)
    record = {**provenance([sys.executable, *sys.argv] if argv is None else ["benchmarks/real_size.py", *argv]),
              "settings": {**dataclasses.asdict(settings), "path": TINY["path"] if args.tiny else PATH,
                           "pipeline_commit": _commit(Path(settings.pipeline)) if settings.pipeline else None},
              "baseline_rss_bytes": _baseline_rss(), "families": {}}
    texts = _maltese(args.data.resolve())
    family_arg = args.family or ("xlmr" if args.tiny else "both")
    for family in (("xlmr", "bert") if family_arg == "both" else (family_arg,)):
        teacher = _teacher(family, texts["train"], work / family, settings)
        record["families"][family] = {"teacher": str(teacher), **_family(family, teacher, texts, work / family, settings)}
        write_json(out, record)  # after each family: a long run keeps what it measured
    print(_table(record))
    print(f"\nwritten to {out}")
    return 0


def _spec_batches(spec: Path) -> dict[str, int]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from search.spec import load_spec

    s = load_spec(spec)
    tasks = [getattr(s.evaluation, task) for task in s.data.tasks] or [s.evaluation.pos]
    return {"adapt": s.teacher.adapt.batch_size, "distill": s.distill.batch_size, "prune": s.prune.batch_size,
            "truncate": s.truncate.distill.batch_size, "evaluate": max(t.batch_size for t in tasks)}


def _maltese(data: Path) -> dict[str, list[str]]:
    """PARSEME Maltese news sentences: training text, and held-out text from its test file (FLORES stays out)."""
    from pipeline.corpus import read_parseme

    return {"train": read_parseme(data / "mt" / "raw" / "train.parsemetsv"),
            "heldout": read_parseme(data / "mt" / "raw" / "test.parsemetsv"), "pos": [str(data / "mt" / "pos")]}


# ---------------------------------------------------------------- teachers of the real shapes


def exact_tokenizer(family: str, texts: list[str], size: int):
    """A tokenizer of ``family`` with exactly ``size`` ids: trained on ``texts``, then completed with generated
    pieces (``▁q000001`` ... for Unigram, scored below every trained piece; ``##q000001`` ... for WordPiece)."""
    from transformers import BertTokenizer, XLMRobertaTokenizer

    from pipeline.vocab import train_unigram_tokenizer, train_wordpiece_tokenizer, unigram_pieces

    trained = min(size, 8_000)
    if family == "xlmr":
        pieces = unigram_pieces(train_unigram_tokenizer(texts, trained))
        floor = min(score for _, score in pieces[4:-1])
        extra = [(f"\u2581q{i:06d}", floor - 1.0 - i * 1e-6) for i in range(size - len(pieces))]
        tokenizer = XLMRobertaTokenizer(vocab=pieces[:-1] + extra + [pieces[-1]])  # <mask> last
    else:
        vocab = train_wordpiece_tokenizer(texts, trained).get_vocab()
        ordered = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
        ordered += [f"##q{i:06d}" for i in range(size - len(ordered))]
        tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(ordered)}, do_lower_case=False,
                                  strip_accents=False)
    if len(tokenizer) != size:
        raise RuntimeError(f"{family} tokenizer has {len(tokenizer)} ids, not {size}")
    return tokenizer


def teacher_config(family: str, settings: Settings) -> tuple[dict, int]:
    """The teacher's config (the real one, or its tiny version) and its exact parameter count."""
    from search.teachers import BUILTIN_TEACHER_CONFIGS

    hub_id, vocab, params = FAMILIES[family]
    config = dict(BUILTIN_TEACHER_CONFIGS[hub_id])
    if settings.tiny:
        config.update(TINY["shape"], vocab_size=TINY["vocab"][family])
        params = config_parameters(config)
    return config, params


def _teacher(family: str, texts: list[str], work: Path, settings: Settings) -> Path:
    """A random-weight teacher of the family's exact shape and vocabulary, saved once under ``work/teacher``.

    Built in a process of its own: on Linux a command inherits, in its peak resident memory, the peak of
    the process that starts it, so this one must never hold a teacher (each row records that floor)."""
    import multiprocessing

    folder = work / "teacher"
    if not (folder / "model.safetensors").is_file():
        process = multiprocessing.get_context("spawn").Process(target=_build_teacher,
                                                               args=(family, texts, folder, settings))
        process.start()
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"building the {family} teacher failed (exit code {process.exitcode})")
    return folder


def _build_teacher(family: str, texts: list[str], folder: Path, settings: Settings) -> None:
    from transformers import AutoConfig, AutoModelForMaskedLM

    config, params = teacher_config(family, settings)
    tokenizer = exact_tokenizer(family, texts, config["vocab_size"])
    values = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    model = AutoModelForMaskedLM.from_config(AutoConfig.for_model(config["model_type"], **values))
    if model.num_parameters() != params:
        raise RuntimeError(f"{family}: {model.num_parameters():,} parameters, not {params:,}")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# ---------------------------------------------------------------- the stages, as commands


def _family(family: str, teacher: Path, texts: dict[str, list[str]], work: Path, settings: Settings) -> dict:
    path = TINY["path"] if settings.tiny else PATH
    corpus, heldout = work / "corpus.txt", work / "heldout.txt"
    # documents of a few thousand characters a line, so that rows fill every length measured
    corpus.write_text("\n".join(_documents(texts["train"], 6_000)) + "\n", encoding="utf-8")
    heldout.write_text("\n".join(_documents(texts["heldout"], 6_000)) + "\n", encoding="utf-8")
    config, params = teacher_config(family, settings)
    rows = []
    for length in settings.lengths:
        out = work / f"L{length}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        out.mkdir(parents=True)
        rows += _path(teacher, corpus, heldout, texts["pos"][0], out, length, path, settings)
    for length in settings.estimate_lengths:
        rows += _path(teacher, corpus, heldout, texts["pos"][0], work / f"L{length}", length, path, settings,
                      estimate_only=True)
    return {"params": params, "vocab_size": config["vocab_size"], "stages": rows}


def _documents(sentences: list[str], chars: int) -> list[str]:
    docs, current = [], []
    for sentence in sentences:
        current.append(sentence)
        if sum(len(s) + 1 for s in current) >= chars:
            docs.append(" ".join(current))
            current = []
    return docs or [" ".join(current)]


def _path(teacher: Path, corpus: Path, heldout: Path, pos: str, out: Path, length: int, path: dict,
          settings: Settings, estimate_only: bool = False) -> list[dict]:
    b, steps, device = settings.batches, settings.steps, settings.device
    train = lambda batch, seq: ["--steps", str(steps), "--batch-size", str(batch), "--max-length", str(seq),  # noqa: E731
                                "--eval-every", "1000000", "--device", device]
    read = lambda folder: json.loads((folder / "config.json").read_text())  # noqa: E731

    def kept(folder: Path, asked: dict) -> dict:
        """``asked`` with the vocabulary trimming kept, once it ran (fewer pieces on a small corpus)."""
        return {**asked, "vocab_size": read(folder)["vocab_size"]} if (folder / "config.json").is_file() else asked

    t_config = read(teacher)
    rows = []

    def run(stage: str, command, estimate_at, batch: int | None, folder: Path, model: Path | None = None) -> dict:
        if estimate_only:  # at the length asked, and whether that fits --device-memory
            estimate = estimate_at(length)
            rows.append({"stage": stage, "length": length, "run_length": None, "batch": batch, "estimate_only": True,
                         "fits": estimate.total <= settings.device_memory, "estimate_bytes": estimate.total,
                         "estimate": {k: getattr(estimate, k) for k in _PARTS}})
            return rows[-1]
        seq = _fitting_length(estimate_at, length, settings.device_memory)
        row = {"stage": stage, "length": length, "run_length": seq, "batch": batch}
        if seq is None:
            rows.append({**row, "skipped": "does not fit --device-memory even at length 64"})
            return rows[-1]
        checkout = Path(settings.pipeline or REPO)
        argv, dropped = _supported([sys.executable, "-m", "pipeline", *[str(a) for a in command(seq)]], checkout)
        if dropped:
            row["dropped"] = dropped
        log = out / f"{stage}.log"
        floor = _own_peak()  # what the command's peak starts from (Linux)
        started = time.perf_counter()
        with log.open("w") as output:
            proc = subprocess.Popen(argv, cwd=checkout, stdout=output, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONPATH": str(checkout)})
            _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this command alone
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{log.read_text()[-3000:]}")
        metrics = _metrics(folder)
        estimate = estimate_at(seq)
        row.update(command=" ".join(argv[1:]).replace(str(REPO) + "/", ""), wall_s=round(wall, 2),
                   peak_rss_bytes=usage.ru_maxrss * 1024, floor_rss_bytes=floor,
                   peak_cuda_bytes=metrics.get("peak_cuda_bytes"),
                   params=metrics.get("params") or config_parameters(read(model or folder)),
                   estimate_bytes=estimate.total,
                   estimate={k: getattr(estimate, k) for k in _PARTS})
        done = {"prune": metrics.get("batches"), "evaluate": steps}.get(stage, metrics.get("steps"))
        seconds = metrics.get("seconds")
        if done and seconds:
            row.update(steps=done, seconds_per_step=round(seconds / done, 4))
        rows.append(row)
        return row

    adapt = out / "adapt"
    cfg = lambda cls, batch, seq, **kw: cls(batch_size=batch, max_length=seq, bf16=True, **kw)  # noqa: E731
    run("adapt", lambda seq: ["adapt", "--model", teacher, "--corpus", corpus, "--heldout", heldout,
                              *train(b["adapt"], seq), "--out", adapt],
        lambda seq: memory.adapt(t_config, cfg(AdaptConfig, b["adapt"], seq), device, batch=b["adapt"]), b["adapt"], adapt)
    kd = out / "distill"
    student = {**t_config, "num_hidden_layers": path["layers"]}
    run("distill", lambda seq: ["distill", "--teacher", teacher, "--layers", path["layers"], "--corpus", corpus,
                                "--heldout", heldout, "--heldout-rows", b["distill"], *train(b["distill"], seq),
                                "--out", kd],
        lambda seq: memory.distill(student, t_config, cfg(DistillConfig, b["distill"], seq), device), b["distill"], kd)
    pruned = out / "prune"
    p_config = {**student, "intermediate_size": path["ffn"]}
    s_config = {**p_config, "hidden_size": path["hidden"]}
    run("prune", lambda seq: ["prune", "--model", kd, "--ffn", path["ffn"], "--corpus", heldout, "--batch-size",
                              b["prune"], "--max-batches", steps, "--max-length", seq, "--device", device, "--out", pruned],
        lambda seq: memory.prune(student, cfg(PruneConfig, b["prune"], seq), device, target=p_config), b["prune"],
        pruned)
    small = out / "truncate"
    run("truncate", lambda seq: ["truncate", "--model", pruned, "--hidden", path["hidden"], "--out", small],
        lambda seq: memory.rebuild(p_config, s_config, "truncate"), None, small)
    kd2 = out / "truncate-distill"
    run("truncate.distill", lambda seq: ["distill", "--teacher", pruned, "--student", small, "--corpus", corpus,
                                         "--heldout", heldout, "--heldout-rows", b["truncate"],
                                         *train(b["truncate"], seq), "--out", kd2],
        lambda seq: memory.distill(s_config, p_config, cfg(DistillConfig, b["truncate"], seq), device, stage="truncate"),
        b["truncate"], kd2)
    final = out / "trim-vocab"
    f_config = {**s_config, "vocab_size": path["vocab"]}
    run("trim_vocab", lambda seq: ["trim-vocab", "--model", kd2, "--corpus", corpus, "--vocab-size", path["vocab"],
                                   "--min-count", "1", "--out", final],
        lambda seq: memory.rebuild(s_config, kept(final, f_config)), None, final)
    scored = out / "evaluate"
    task = lambda seq: TaskTraining(batch_size=b["evaluate"], max_length=seq)  # noqa: E731
    run("evaluate", lambda seq: ["evaluate", "--model", final, "--task", "pos", "--data", pos, "--seeds", "1",
                                 "--epochs", "1", "--batch-size", b["evaluate"], "--max-length", seq,
                                 "--max-train-examples", b["evaluate"] * steps, "--max-eval-examples", 64,
                                 "--device", device, "--out", scored],
        lambda seq: memory.evaluate(kept(final, f_config), task(seq), "adapter", device), b["evaluate"], scored,
        final)
    return rows


_PARTS = ("weights", "gradients", "optimizer", "activations", "logits")


def _own_peak() -> int:
    """This process's own peak resident memory (``VmHWM``), what a command it starts inherits as its peak on
    Linux; ``ru_maxrss`` would also hold what this process inherited from its own starter."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _supported(argv: list[str], checkout: Path) -> tuple[list[str], list[str]]:
    """``argv`` less the options (each with its value) that ``checkout``'s command does not have, and those."""
    if checkout == REPO:
        return argv, []
    key = (checkout, argv[3])  # the command
    if key not in _OPTIONS:
        help_text = subprocess.run([*argv[:4], "--help"], cwd=checkout, capture_output=True, text=True, check=True,
                                   env={**os.environ, "PYTHONPATH": str(checkout)}).stdout
        _OPTIONS[key] = set(re.findall(r"--[a-z][a-z-]*", help_text))
    kept, dropped, rest = argv[:4], [], argv[4:]
    while rest:
        option = rest.pop(0)
        value = [rest.pop(0)] if rest and not rest[0].startswith("--") else []
        if option in _OPTIONS[key] or not option.startswith("--"):
            kept += [option, *value]
        else:
            dropped.append(" ".join([option, *value]))
    return kept, dropped


_OPTIONS: dict[tuple[Path, str], set[str]] = {}  # (checkout, command) -> the options its --help lists


def _commit(checkout: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True,
                          check=True).stdout.strip()


def _fitting_length(estimate_at, length: int, budget: int) -> int | None:
    """``length``, or the largest multiple of 64 below it whose estimate fits ``budget`` (None: not even 64)."""
    for seq in [length, *range(length - length % 64, 63, -64)]:
        if seq and estimate_at(seq).total <= budget:
            return seq
    return None


def _metrics(folder: Path) -> dict:
    file = folder / "metrics.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def _baseline_rss() -> int:
    """Peak resident memory of a process that only imports what a stage imports: what every command
    holds before it loads a model."""
    code = "import pipeline.modeling, pipeline.training, pipeline.evaluate"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024


def _table(record: dict) -> str:
    """The measured rows as Markdown, each estimate against what it estimates: torch's peak on CUDA; on the
    CPU the peak resident memory less the baseline (a process that has imported what a stage imports)."""
    gib = lambda value: "" if value is None else f"{value / 2**30:.2f}"  # noqa: E731
    baseline = record["baseline_rss_bytes"]
    lines = ["| family | stage | length | batch | s/step | wall s | peak RSS GiB | RSS less baseline GiB "
             "| peak CUDA GiB | estimate GiB | estimate / measured | params |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for family, data in record["families"].items():
        for row in data["stages"]:
            head = f"| {family} | {row['stage']} | {row['length']} | {row['batch'] or ''} "
            if row.get("skipped"):
                lines.append(head + "| skipped | | | | | | | |")
                continue
            if row.get("estimate_only"):
                fits = "" if row["fits"] else " (over --device-memory)"
                lines.append(head + f"| not run | | | | | {gib(row['estimate_bytes'])}{fits} | | |")
                continue
            if row["run_length"] != row["length"]:
                head = f"| {family} | {row['stage']} | {row['run_length']} (of {row['length']}) | {row['batch'] or ''} "
            measured = row["peak_cuda_bytes"] or row["peak_rss_bytes"] - baseline
            floor = " (at its floor)" if row["peak_rss_bytes"] <= 1.05 * row.get("floor_rss_bytes", 0) else ""
            lines.append(head + f"| {row.get('seconds_per_step', '')} | {row['wall_s']} | {gib(row['peak_rss_bytes'])}"
                         f"{floor} | {gib(row['peak_rss_bytes'] - baseline)} | {gib(row['peak_cuda_bytes'])} "
                         f"| {gib(row['estimate_bytes'])} | {_ratio(row['estimate_bytes'], measured)} "
                         f"| {row['params']:,} |")
    return "\n".join(lines + ["", f"Baseline: {gib(baseline)} GiB resident in a process that has imported what a "
                                   "stage imports, before it loads a model."])


def _ratio(value: float, of: float) -> str:
    return f"{value / of:.2f}" if of > 0 else ""


def _compare(before: dict, after: dict) -> str:
    """Peak resident (and CUDA) memory per stage and length of two runs, with after / before."""
    gib = lambda value: "" if value is None else f"{value / 2**30:.2f}"  # noqa: E731
    commits = (before["settings"].get("pipeline_commit") or before["commit"],
               after["settings"].get("pipeline_commit") or after["commit"])
    lines = [f"before: {commits[0][:10]}, after: {commits[1][:10]}", "",
             "| family | stage | length | peak RSS GiB before | after | after/before | peak CUDA GiB before | after "
             "| options the earlier commands lacked |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for family, data in after["families"].items():
        earlier = {(row["stage"], row["length"]): row for row in before["families"].get(family, {}).get("stages", [])}
        for row in data["stages"]:
            old = earlier.get((row["stage"], row["length"]))
            if old is None or any(r.get("skipped") or r.get("estimate_only") for r in (row, old)):
                continue
            lines.append(f"| {family} | {row['stage']} | {row['run_length']} | {gib(old['peak_rss_bytes'])} "
                         f"| {gib(row['peak_rss_bytes'])} | {_ratio(row['peak_rss_bytes'], old['peak_rss_bytes'])} "
                         f"| {gib(old.get('peak_cuda_bytes'))} "
                         f"| {gib(row.get('peak_cuda_bytes'))} | {', '.join(old.get('dropped', []))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
