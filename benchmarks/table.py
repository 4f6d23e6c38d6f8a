"""The Maltese table: every student of a real space built and scored once, with its costs and cheap signals.

    python benchmarks/table.py --out FILE.json     # the CPU scale (about 3 h on 2 cores)
    python benchmarks/table.py --quick             # the same protocol at tiny sizes (minutes)
    python benchmarks/analyse_table.py FILE        # every claim, with intervals, from the table alone

Everything runs offline on ``../shared/data`` (``--data``) through the tool itself: the Maltese
benchmark's teacher (`maltese.py`'s scale, built from scratch by `pipeline.trial.build_teacher`), the
spec and `search.prepare`, the stage cache, `pipeline.trial.build_student` at the rungs of multi-
fidelity, the cheap signals of `pipeline.signals` and `pipeline.trial.evaluate_model`. In order:

1. **protocol pilots, on dev only**: the teacher and a random model of its shape under each evaluation
   option (adapters or full fine-tuning, first-token or mean pooling, the epochs halved), one seed; the
   option with the largest teacher-over-random dev gap is the protocol. Then the pretraining length:
   the teacher pretrained for fewer steps against the full recipe, under that protocol, on dev; the
   better teacher is the table's. Beside those last pilots, the random model's full evaluation (every
   seed, dev and test), which reuses its pilot's seed from the stage cache.
2. **the teacher**: built, or found in the stage cache, and the trial context around it.
3. **every student** of the space (layers x FFN x hidden x vocabulary): at each rung of its last
   distillation (0 = after the training-free stages) its cheap signals with their cost, and at the top
   rung the full evaluation with what a paired bootstrap needs (per-example counts on dev and test, per
   seed); every stage build with its CPU seconds, keyed by its cache key, so a shared build is counted
   once. The keys are those of the table's first run (``key_inputs``): a resumed run on another machine
   rebuilds the teacher and the text under other paths and file times, and its builds are keyed as the
   first run would have keyed them.
4. **scratch**: each shape of the dev front trained from random initialisation with MLM on the same
   text, with the pretraining recipe's learning rate and warm-up, for the FLOPs of its compression path
   (teacher forward passes and held-out passes included); the best front shape also for those FLOPs
   plus the teacher's own pretraining. That run is the longest of the table; while it trains, the other
   worker takes the other shapes and then what no phase needs: the paper path's intermediate models
   outside the space (as the students, at the top rung only), and the teacher's and the random model's
   full rows (evaluation and signals).

The table (JSON) is written after every finished piece of work and read back on start: a run that
stops resumes where the file ends, on this machine or another (the stage cache does not travel; a
student the file holds is never built again). A file of another tool, scale, space or teacher is
refused. Work runs in ``--workers`` processes of one thread each.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import maltese  # noqa: E402
from maltese_data import prepare_text  # noqa: E402
from provenance import provenance, write_json  # noqa: E402

from pipeline.config import AdaptConfig, Candidate, EvalConfig, SignalConfig  # noqa: E402
from pipeline.errors import UsageError  # noqa: E402

log = logging.getLogger("table")

TOOL = "lrl-compress maltese table"
VERSION = 1
TASKS = maltese.TASKS
SIGNAL_NAMES = ("mlm", "distill", "probe", "capped")


@dataclasses.dataclass(frozen=True)
class Setup:
    """What one table is made of, besides `maltese.Scale`: its space, rungs and pilots."""

    scale: maltese.Scale
    space: dict  # layers, ffn, hidden, vocab (lists)
    rungs: tuple[int, ...]  # of the last distillation; 0 = after the training-free stages
    rung_evaluation: dict  # the capped evaluation (a search's rung evaluation)
    pretrain_steps: tuple[int, ...]  # pilot: pretraining lengths, the scale's own among them
    signals: SignalConfig = SignalConfig()
    finetune_lr: float = 5e-4  # pilot: full fine-tuning's learning rate (the benchmark's first run)


def setup_named(name: str) -> Setup:
    """The table setup of a scale (``quick`` or ``cpu``)."""
    scale = maltese.SCALES[name]
    t = scale.teacher
    paper = maltese.paper_path(scale)
    hidden = sorted({c.hidden_size for _, c in paper if c.hidden_size < t.hidden_size})
    space = maltese.search_space(scale)
    space = {"layers": space["layers"], "ffn": space["ffn"], "hidden": hidden, "vocab": space["vocab"],
             "init": ["stride"]}
    steps = scale.distill.steps
    if name == "quick":
        return Setup(scale, {**space, "ffn": space["ffn"][1:], "hidden": hidden[::2]}, (0, 2, 4, steps),
                     {"seeds": 1, "epochs": 1, "max_train_examples": 32}, (15, scale.pretrain.steps),
                     SignalConfig(heldout_lines=200, probe_max_train=200))
    # The capped evaluation is the Maltese search-cost setup's rung evaluation. Probes train on 300
    # examples a task: a POS probe on all 1,123 training sentences costs 48 CPU s, on 300 about 11 s.
    return Setup(scale, space, (0, steps // 8, 3 * steps // 8, steps), {"seeds": 1, "epochs": 2, "max_train_examples": 300},
                 (1500, scale.pretrain.steps), SignalConfig(heldout_lines=1000, probe_max_train=300))


# Stage settings added after the CPU table began, at the values that keep its numbers (every held-out
# row scored, as before; bf16 autocast of pruning acts on CUDA only): left out of the fingerprint, so that
# table still resumes. Any other value changes the fingerprint.
_ADDED_LATER = {("distill", "heldout_rows", None), ("prune", "bf16", True)}


def fingerprint(setup: Setup) -> dict:
    """What a table's numbers depend on and a resumed run must share: the teacher, the stage settings,
    the space, the rungs, the signals and the pilots' choices."""
    scale = setup.scale

    def settings(stage: str, config) -> dict:
        return {k: v for k, v in dataclasses.asdict(config).items() if (stage, k, v) not in _ADDED_LATER}

    fixed = {"teacher": dataclasses.asdict(scale.teacher), "pretrain": dataclasses.asdict(scale.pretrain),
             "distill": settings("distill", scale.distill), "prune": settings("prune", scale.prune),
             "evaluation": json.loads(json.dumps(dataclasses.asdict(scale.evaluation))),
             "vocab_trim": scale.vocab_trim, "corpus_lines": scale.corpus_lines, "space": setup.space,
             "rungs": list(setup.rungs), "rung_evaluation": setup.rung_evaluation,
             "pretrain_steps": list(setup.pretrain_steps), "signals": dataclasses.asdict(setup.signals),
             "finetune_lr": setup.finetune_lr}
    digest = hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]
    return {"scale": scale.name, "hash": digest, "settings": fixed}


# ---------------------------------------------------------------------------- the table file
def load_table(path: Path, setup: Setup) -> dict | None:
    """The table in ``path`` when it is this tool's and of this setup; None when there is none.

    Raises:
        UsageError: for a file that is not JSON, not a table of this tool, or of another setup.
    """
    if not path.exists():
        return None
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: not a readable JSON table ({error})") from None
    if not isinstance(table, dict) or table.get("tool") != TOOL:
        raise UsageError(f"{path}: not a table of this tool (no \"tool\": \"{TOOL}\")")
    theirs, ours = table.get("fingerprint") or {}, fingerprint(setup)
    if theirs.get("hash") != ours["hash"]:
        different = sorted(k for k in ours["settings"] if (theirs.get("settings") or {}).get(k) != ours["settings"][k])
        raise UsageError(f"{path}: a table of another setup (scale {theirs.get('scale')}; differs in "
                         f"{', '.join(different) or 'its version'}); give a new --out")
    return table


def new_table(setup: Setup) -> dict:
    return {"tool": TOOL, "version": VERSION, "fingerprint": fingerprint(setup), "runs": [], "corpus": None,
            "protocol": None, "teacher": None, "random": None, "students": [], "scratch": [], "builds": {},
            "build_info": {}, "signals": {name: better for name, better in _signal_directions().items()},
            "rungs": list(setup.rungs)}


def _signal_directions() -> dict[str, str]:
    from pipeline.signals import SIGNALS

    return {name: SIGNALS[name] for name in SIGNAL_NAMES}


def _add_builds(table: dict, builds: list[dict]) -> None:
    """Record each stage build once, by cache key, with the CPU seconds it cost when it was built (kept
    with the cached output, so a build another process made, or a run that crashed, is counted too)."""
    for build in builds:
        if build["key"] not in table["builds"]:
            table["builds"][build["key"]] = build["build_cpu_s"]
            table["build_info"][build["key"]] = {"stage": build["stage"], "wall_s": build["build_wall_s"],
                                                 "rung": build["rung"], "for_teacher": build["for_teacher"],
                                                 "steps": build["steps"]}


def _own_costs(table: dict) -> None:
    """Each student's ``cost_s``: its full evaluation and the builds no other student needs (every rung's)."""
    owners: dict[str, int] = {}
    keys = {s["name"]: {k for path in s["rung_paths"].values() for k in path} for s in table["students"]}
    for own in keys.values():
        for key in own:
            owners[key] = owners.get(key, 0) + 1
    for student in table["students"]:
        alone = sum(table["builds"].get(key) or 0.0 for key in keys[student["name"]] if owners[key] == 1)
        student["cost_s"] = round(student["eval_cost_s"] + alone, 2)


# ---------------------------------------------------------------------------- the spec and the teacher
def spec_file(setup: Setup, work: Path, data: Path, evaluation: EvalConfig, pretrain_steps: int) -> Path:
    """The tool's spec of the table (written under ``work``): its space, its teacher pretrained
    ``pretrain_steps``, ``evaluation``, and its rungs as the search's fidelity."""
    import yaml

    scale = dataclasses.replace(setup.scale, evaluation=evaluation,
                                pretrain=dataclasses.replace(setup.scale.pretrain, steps=pretrain_steps))
    path = maltese.write_spec(scale, work, work / "text", data, space=setup.space, distill_steps=scale.distill.steps,
                              samples=1)
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    trained = sorted(r for r in setup.rungs if r > 0)  # the search's rungs: min_steps times powers of a factor
    spec["search"]["fidelity"] = {"min_steps": trained[0], "max_steps": trained[-1],
                                  "reduction_factor": trained[1] // trained[0] if len(trained) > 2 else 2,
                                  "rung_evaluation": setup.rung_evaluation}
    path = work / f"table-spec-{pretrain_steps}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _spec(setup: Setup, work: Path, data: Path, evaluation: EvalConfig, pretrain_steps: int):
    from search.spec import load_spec

    return load_spec(spec_file(setup, work, data, evaluation, pretrain_steps))


def _teacher(spec, steps: int | None = None) -> str:
    from pipeline.trial import build_teacher

    adapt = spec.teacher.adapt if steps is None else dataclasses.replace(spec.teacher.adapt, steps=steps)
    return build_teacher(spec.teacher.build, adapt, spec.data.corpus, spec.data.heldout, spec.search.cache_dir)


# ---------------------------------------------------------------------------- pilots
def protocol_options(setup: Setup) -> dict[str, tuple[EvalConfig, tuple[str, ...]]]:
    """Each evaluation option of the pilots, one seed, with the tasks it changes (pooling: not POS)."""
    base = dataclasses.replace(setup.scale.evaluation, seeds=(1,))

    def each(config: EvalConfig, **changes) -> EvalConfig:
        return dataclasses.replace(config, **{t: dataclasses.replace(getattr(config, t), **changes) for t in TASKS})

    def pooled(config: EvalConfig) -> EvalConfig:
        return dataclasses.replace(config, **{t: dataclasses.replace(getattr(config, t), pooling="mean")
                                              for t in ("topic", "sentiment")})

    finetune = dataclasses.replace(each(base, method="finetune", lr=setup.finetune_lr), method="finetune")
    halved = dataclasses.replace(base, **{t: dataclasses.replace(getattr(base, t), epochs=max(1, getattr(base, t).epochs // 2))
                                          for t in TASKS})
    return {"adapter": (base, TASKS), "adapter-mean": (pooled(base), ("topic", "sentiment")),
            "finetune": (finetune, TASKS), "finetune-mean": (pooled(finetune), ("topic", "sentiment")),
            "adapter-half-epochs": (halved, TASKS)}


def chosen_protocol(table: dict, setup: Setup) -> tuple[EvalConfig, int]:
    """The evaluation and pretraining length the table's pilots chose on dev (`decide_protocol`)."""
    protocol = table["protocol"]
    return full_evaluation(setup, protocol["decision"]["option"]), protocol["pretraining"]["steps"]


def full_evaluation(setup: Setup, option: str) -> EvalConfig:
    """A pilot option with every seed of the scale: the evaluation of the table's models under it."""
    config, _ = protocol_options(setup)[option]
    return dataclasses.replace(config, seeds=setup.scale.evaluation.seeds)


def pilot_score(pilots: list[dict], options: dict, model: str, option: str, task: str) -> float:
    """A model's dev score under an option; a task the option does not change (POS under a pooling
    option) is scored under the option it changes: its method's first-token one."""
    source = option if task in options[option][1] else option.removesuffix("-mean")
    return next(p["dev"] for p in pilots if (p["model"], p["option"], p["task"]) == (model, source, task))


def decide_protocol(pilots: list[dict], options: dict) -> dict:
    """The option whose teacher-minus-random dev gap, averaged over the tasks, is largest."""
    gaps = {}
    for option in options:
        per_task = {task: pilot_score(pilots, options, "teacher", option, task)
                    - pilot_score(pilots, options, "random", option, task) for task in TASKS}
        gaps[option] = {"tasks": per_task, "mean": statistics.fmean(per_task.values())}
    chosen = max(gaps, key=lambda o: gaps[o]["mean"])
    return {"rule": "largest mean over tasks of teacher minus random dev score (one seed)", "gaps": gaps,
            "option": chosen}


def _pilot_job(args) -> dict:
    """One pilot: a model (teacher, random or a shorter-pretrained teacher) under one option."""
    spec, model, model_dir, option, evaluation, tasks = args
    from pipeline.plan import input_key
    from pipeline.trial import evaluate_model

    started, cpu = time.perf_counter(), time.process_time()
    if model_dir is None:  # a teacher to build first (a pretraining length)
        model_dir = _teacher(spec, int(model.split("-")[1]))
    chosen = {t: spec.data.tasks[t] for t in tasks}
    result = evaluate_model(model_dir, input_key(model_dir), chosen, evaluation, spec.search.cache_dir)
    return {"rows": [{"model": model, "option": option, "task": t, "dev": result["scores"][t],
                      "cpu_s": result["tasks"][t].get("cpu_seconds")} for t in tasks],
            "model_dir": model_dir, "cpu_s": round(time.process_time() - cpu, 1),
            "wall_s": round(time.perf_counter() - started, 1)}


def _evaluation_job(args) -> None:
    """A model's evaluation into the stage cache, for a later `evaluate_model` of it to find."""
    model_dir, tasks, evaluation, cache_dir = args
    from pipeline.plan import input_key
    from pipeline.trial import evaluate_model

    evaluate_model(model_dir, input_key(model_dir), tasks, evaluation, cache_dir)


# ---------------------------------------------------------------------------- students
def _model_row(result: dict) -> dict:
    """The full evaluation of a model: dev and test per task (means and per seed), per-example counts, and
    its CPU seconds (as measured when each task was scored, cached or not)."""
    tasks = result["tasks"]
    return {"dev": {t: tasks[t]["dev_mean"] for t in tasks}, "test": {t: tasks[t]["mean"] for t in tasks},
            "dev_seeds": {t: tasks[t]["dev_scores"] for t in tasks}, "test_seeds": {t: tasks[t]["scores"] for t in tasks},
            "examples": {t: tasks[t].get("examples") for t in tasks},
            "eval_cost_s": round(sum(tasks[t].get("cpu_seconds") or 0.0 for t in tasks), 2)}


def _path_flops(built: dict, teacher_config: dict, setup: Setup) -> float:
    """FLOPs of a student's compression path: every distillation with its teacher's forward passes, and
    the pruning pass (vocabulary trimming is counting, not FLOPs)."""
    from pipeline.flops import distill_flops, prune_flops

    sizes = {"num_hidden_layers", "intermediate_size", "hidden_size", "vocab_size"}
    config = {k: teacher_config[k] for k in sizes}
    total = 0.0
    for stage in ("distill", "prune", "truncate"):
        if stage not in built["stages"]:
            continue
        metrics, settings = built["stages"][stage], built["settings"][stage]
        before = dict(config)
        if stage == "distill":
            config["num_hidden_layers"] = settings["layers"]
            total += distill_flops(config, teacher_config, metrics, setup.scale.distill.max_length)
        elif stage == "prune":
            total += prune_flops(before, metrics, setup.scale.prune.max_length)
            config["intermediate_size"] = settings["ffn"]
        else:
            config["hidden_size"] = settings["hidden"]
            total += distill_flops(config, before, metrics, setup.scale.distill.max_length)
    return total


def _student_job(args) -> dict:
    """Every rung of a few students that share their builds (one layers x FFN x hidden, both vocabularies),
    or one paper model without rungs: builds, signals, and the full evaluation at the top."""
    context, setup_name, students, teacher_dirs, first = args
    import torch

    torch.set_num_threads(1)
    _worker_logging()
    from pipeline.trial import build_student, evaluate_model
    from search.space import label

    setup = setup_named(setup_name)
    plan0 = context.plan
    heldout = _heldout(plan0)
    out, builds = [], []
    for entry in students:
        candidate = Candidate(**entry["candidate"])
        rungs = setup.rungs if entry["rungs"] else (max(setup.rungs),)
        row = {**entry, "name": entry.get("name") or label(candidate), "signals": {s: {} for s in SIGNAL_NAMES},
               "signal_parts": {s: {} for s in SIGNAL_NAMES}, "signal_cost_s": {s: {} for s in SIGNAL_NAMES},
               "rung_paths": {}}
        for rung in rungs:
            plan = dataclasses.replace(plan0, candidate=candidate, rung=rung if entry["rungs"] else None,
                                       rungs=setup.rungs if entry["rungs"] else ())
            built = build_student(plan)
            table_keys = _table_keys(plan, first)
            for build in built["builds"]:
                build["key"] = table_keys[build["key"]]
            builds += built["builds"]
            row["rung_paths"][str(rung)] = [b["key"] for b in built["builds"]]
            teacher = teacher_dirs[str(candidate.vocab_size)]
            for signal, measured in _signals(built["model_dir"], plan, teacher, heldout, setup.signals).items():
                row["signals"][signal][str(rung)] = measured["value"]
                row["signal_parts"][signal][str(rung)] = measured["parts"]
                row["signal_cost_s"][signal][str(rung)] = measured["cpu_s"]
            if rung == max(setup.rungs):
                result = evaluate_model(built["model_dir"], built["final_key"], plan.tasks, plan.evaluation,
                                        plan.cache_dir)
                row.update(_model_row(result))
                row["params"] = built["params"]
                row["config"] = built["config"]
                row["path"] = [b["key"] for b in built["builds"]]
                row["path_steps"] = sum((built["stages"].get(s) or {}).get("steps") or 0 for s in ("distill", "truncate"))
                row["flops"] = _path_flops(built, context.teacher_config, setup)
                row["model_dir"] = built["model_dir"]
        out.append(row)
    return {"students": out, "builds": builds}


def key_inputs(plan) -> dict[str, str]:
    """What a stage key holds of this machine: the teacher's key (its folder's path and file times) and
    the paths of the corpus and the held-out text."""
    from pipeline.plan import input_key

    return {"teacher": input_key(plan.teacher), "corpus": plan.corpus.source, "heldout": plan.heldout.source}


def _table_keys(plan, first: dict[str, str]) -> dict[str, str]:
    """This machine's stage keys of ``plan`` -> the table's: each build keyed as the table's first run
    keyed it (``first``: its `key_inputs`). A resumed run on another machine, or in another folder,
    rebuilds the teacher and the text under other paths and file times, which change every key."""
    from pipeline import modeling
    from pipeline.plan import plan_steps

    config = modeling.load_config(plan.teacher)
    theirs = dataclasses.replace(plan, corpus=dataclasses.replace(plan.corpus, source=first["corpus"]),
                                 heldout=dataclasses.replace(plan.heldout, source=first["heldout"]))
    ours, theirs = (plan_steps(plan, key_inputs(plan)["teacher"], config),
                    plan_steps(theirs, first["teacher"], config))
    return {a.key: b.key for a, b in zip(ours, theirs, strict=True)}


def _heldout(plan) -> list[str]:
    from pipeline.corpus import read_corpus

    return read_corpus(plan.heldout)


def _trimmed_teacher(context, vocab: int, first: dict[str, str]) -> dict:
    """The teacher trimmed like a student of ``vocab`` pieces, under the very key a plan gives it (a plan
    that only trims, first); its builds keyed as the table keys them (`_table_keys`)."""
    from pipeline.trial import build_student

    config = context.teacher_config
    candidate = Candidate(config["num_hidden_layers"], config["intermediate_size"], config["hidden_size"], vocab)
    order = ("trim_vocab", *[s for s in context.plan.order if s != "trim_vocab"])
    plan = dataclasses.replace(context.plan, candidate=candidate, order=order)
    built, table_keys = build_student(plan), _table_keys(plan, first)
    for build in built["builds"]:
        build["key"] = table_keys[build["key"]]
    return built


def _worker_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s: %(message)s", datefmt="%H:%M:%S")


# ---------------------------------------------------------------------------- scratch
def _scratch_job(args) -> dict:
    """A front shape trained from random initialisation with MLM for ``flops``, then evaluated in full."""
    name, budget, flops, config, tokenizer_dir, spec, evaluation, cache_dir, recipe = args
    import torch

    torch.set_num_threads(1)
    _worker_logging()
    from pipeline import modeling
    from pipeline.adapt import pretrain_from_scratch
    from pipeline.cache import cached, stage_key
    from pipeline.corpus import read_corpus
    from pipeline.flops import mlm_training_flops
    from pipeline.mlm import encode
    from pipeline.plan import input_key
    from pipeline.trial import evaluate_model

    tokenizer = modeling.load_tokenizer(tokenizer_dir)
    texts, heldout = read_corpus(spec.data.corpus), read_corpus(spec.data.heldout)
    heldout_tokens = sum(len(r) for r in encode(tokenizer, heldout, recipe.max_length, pack=recipe.pack))
    sample = encode(tokenizer, texts[:5000], recipe.max_length, pack=recipe.pack)  # real tokens a row
    row_tokens = sum(len(r) for r in sample) / max(1, len(sample))
    steps = _scratch_steps(config, flops, heldout_tokens, row_tokens, recipe)
    settings = dataclasses.replace(recipe, steps=steps, eval_every=max(1, steps // 4),
                                   warmup_steps=round(steps * recipe.warmup_steps / recipe.steps))
    key = stage_key(input_key(tokenizer_dir), "scratch", {"config": config, "flops": round(flops), "settings": settings,
                                                          "corpus": spec.data.corpus, "heldout": spec.data.heldout})
    started = time.process_time()

    def build(out: Path) -> None:
        fresh = {k: v for k, v in config.items() if k != "architectures"}
        model, tok, metrics = pretrain_from_scratch(fresh, tokenizer, texts, heldout, settings)
        modeling.save(model, tok, out)
        modeling.write_metrics(out, metrics)

    folder = cached(cache_dir, key, build)
    train_cpu = time.process_time() - started
    metrics = json.loads((folder / "metrics.json").read_text())
    result = evaluate_model(str(folder), key, spec.data.tasks, evaluation, cache_dir)
    return {"name": f"{name} from scratch", "of": name, "budget": budget, "params": config_parameters_of(config),
            "steps": steps, "warmup_steps": settings.warmup_steps, "lr": settings.lr,
            "flops_budget": flops, "flops": mlm_training_flops(config, metrics, recipe.max_length),
            "train_cost_s": round(train_cpu, 1), "heldout_loss": metrics.get("heldout_loss"), **_model_row(result)}


def config_parameters_of(config: dict) -> int:
    from pipeline.sizes import config_parameters

    return config_parameters(config)


def _scratch_steps(config: dict, flops: float, heldout_tokens: int, row_tokens: float, recipe: AdaptConfig) -> int:
    """The most MLM steps of ``recipe``'s batches (rows of ``row_tokens`` tokens) whose training and
    held-out passes fit in ``flops``."""
    from pipeline.flops import TRAIN_FACTOR, forward_flops

    step = TRAIN_FACTOR * forward_flops(config, recipe.batch_size * row_tokens, recipe.max_length)
    heldout = forward_flops(config, heldout_tokens, recipe.max_length)
    steps = max(1, int(flops // step))
    while steps > 1:
        passes = 1 + steps // max(1, steps // 4) + (1 if steps % max(1, steps // 4) else 0)
        if steps * step + passes * heldout <= flops:
            break
        steps -= max(1, steps // 100)
    return steps


# ---------------------------------------------------------------------------- running it
def _pool(workers: int):
    spawn = multiprocessing.get_context("spawn")  # forking a process that holds torch's thread pools can hang
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn, initializer=_worker_threads)


def _worker_threads() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _front(rows: list[dict]) -> list[dict]:
    from search.pareto import pareto_front

    records = [{"id": r["name"], "metrics": {"quality": statistics.fmean(r["dev"][t] for t in TASKS),
                                             "params": r["params"]}} for r in rows]
    ids = pareto_front(records, [("quality", "max"), ("params", "min")])
    return [r for r in rows if r["name"] in ids]


# A run's phases, in order, each resuming from what the table holds. The last builds the scratch rows and,
# beside them, the paper path's models outside the space and the teacher's and random model's rows (`Run.last`).
PHASES = ("text", "pilots", "teacher", "students", "scratch")


class Run:
    """One tabulation: the table in memory, written after every piece of work."""

    def __init__(self, setup: Setup, data: Path, work: Path, out: Path, workers: int, argv: list[str]):
        self.setup, self.data, self.work, self.out, self.workers = setup, data, work, out, workers
        self.table = load_table(out, setup) or new_table(setup)
        self.started, self.cpu = time.time(), time.process_time()
        self.session = {**provenance(["benchmarks/table.py", *argv]), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "phases": {}}
        self.table["runs"].append(self.session)

    def save(self) -> None:
        self.session["wall_s"] = round(time.time() - self.started, 1)
        write_json(self.out, self.table, indent=None)  # compact: per-example lists would triple it

    def phase(self, name: str, started: float) -> None:
        self.session["phases"][name] = round(time.time() - started, 1)
        self.save()

    def run(self, stop_after: str | None = None) -> dict:
        """Each phase (`PHASES`) in turn, up to ``stop_after`` (default: all), doing only what the table
        does not hold yet."""
        setup, table = self.setup, self.table
        for name in PHASES[:PHASES.index(stop_after) + 1] if stop_after else PHASES:
            t = time.time()
            if name == "text":
                if table["corpus"] is None or not (self.work / "text" / "corpus.txt").is_file():
                    table["corpus"] = prepare_text(self.data, self.work / "text")
            elif name == "pilots":
                if table["protocol"] is None or "pretraining" not in table["protocol"]:
                    self.pilots(_spec(setup, self.work, self.data, setup.scale.evaluation, setup.scale.pretrain.steps))
                continue  # timed inside, when it runs
            elif name == "teacher":
                evaluation, steps = self.protocol()
                spec = _spec(setup, self.work, self.data, evaluation, steps)
                context = self.prepare(spec)
            elif name == "students":
                self.students(spec, context)
            else:
                self.last(spec, context)
            self.phase(name, t)
        self.session["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.save()
        return table

    # -- pilots
    def pilots(self, spec) -> None:
        setup, t = self.setup, time.time()
        options = protocol_options(setup)
        teacher = self._the_teacher(spec)
        random_dir = self._random(spec)
        protocol = self.table["protocol"] or {"pilots": [], "pilot_cost_s": 0.0}
        done = {(p["model"], p["option"], p["task"]) for p in protocol["pilots"]}
        jobs = [(spec, model, model_dir, option, config, tasks)
                for option, (config, tasks) in options.items()
                for model, model_dir in (("teacher", teacher), ("random", random_dir))
                if any((model, option, task) not in done for task in tasks)]
        shorter = [s for s in setup.pretrain_steps if s != setup.scale.pretrain.steps]
        with _pool(self.workers) as pool:
            builds = {s: pool.submit(_teacher, spec, s) for s in shorter}  # pretraining lengths, meanwhile
            for result in _as_done(pool, _pilot_job, jobs):
                protocol["pilots"] += result["rows"]
                protocol["pilot_cost_s"] = round(protocol["pilot_cost_s"] + result["cpu_s"], 1)
                self.table["protocol"] = protocol
                self.save()
            protocol["decision"] = decide_protocol(protocol["pilots"], options)
            chosen = protocol["decision"]["option"]
            jobs = []
            for s in shorter:
                for option in {chosen, chosen.removesuffix("-mean")}:
                    jobs.append((spec, f"teacher-{s}", builds[s].result(), option, options[option][0],
                                 options[option][1] if option == chosen else ("pos",)))
            # the random model's full evaluation, which no pretraining length changes, beside the shorter
            # teachers' pilots (the other worker would wait for them); it reuses the pilot's seed, and the
            # random model's row (`Run.last`) finds the whole of it in the stage cache
            full = pool.submit(_evaluation_job, (random_dir, spec.data.tasks, full_evaluation(setup, chosen),
                                                 spec.search.cache_dir))
            for result in _as_done(pool, _pilot_job, jobs):
                protocol["pilots"] += result["rows"]
            full.result()
        lengths = {s: statistics.fmean(
            pilot_score(protocol["pilots"], options, "teacher" if s == setup.scale.pretrain.steps else f"teacher-{s}",
                        chosen, task) for task in TASKS) for s in setup.pretrain_steps}
        protocol["pretraining"] = {"rule": "higher mean dev score of the teacher under the chosen protocol (one seed)",
                                   "dev": {str(s): v for s, v in lengths.items()},
                                   "steps": max(lengths, key=lengths.get)}
        self.table["protocol"] = protocol
        self.phase("pilots", t)

    def _the_teacher(self, spec) -> str:
        """The teacher's folder, built unless the stage cache holds it. A run that builds it records the
        build's wall seconds (``teacher_built_s``), so a table's time counts a teacher built within its runs
        once and one built before them apart."""
        cache = Path(spec.search.cache_dir)
        before = set(os.listdir(cache)) if cache.is_dir() else set()
        t = time.time()
        folder = _teacher(spec)
        if Path(folder).name not in before:
            self.session["teacher_built_s"] = round(time.time() - t, 1)
        return folder

    def protocol(self) -> tuple[EvalConfig, int]:
        return chosen_protocol(self.table, self.setup)

    def _random(self, spec) -> str:
        from pipeline.trial import build_teacher

        untrained = dataclasses.replace(spec.teacher.adapt, steps=0)
        return build_teacher(spec.teacher.build, untrained, spec.data.corpus, spec.data.heldout, spec.search.cache_dir)

    # -- the teacher
    def prepare(self, spec):
        """The trial context: the teacher built or found in the cache. Its full row and the random
        model's wait for the last phase (`last`), which nothing before needs."""
        from search.preflight import preflight
        from search.prepare import trial_context
        from search.spec import teacher_config

        report = preflight(spec)  # every source opens, before anything trains
        report.raise_problems()
        config = teacher_config(spec)
        context = trial_context(spec, self._the_teacher(spec), config)
        # the table scores its own rungs (0 and those of its protocol); the spec's fidelity gives the
        # schedule they share, which the builds' keys hold
        if max(context.rungs) != max(self.setup.rungs):
            raise UsageError(f"the spec's last distillation trains {max(context.rungs)} steps, not the table's "
                             f"{max(self.setup.rungs)}")
        context = dataclasses.replace(context, rungs=self.setup.rungs)
        # what the stage keys of the table's first run hold: the same builds keep their keys elsewhere
        self.table.setdefault("key_inputs", key_inputs(context.plan))
        return context

    # -- students
    def students(self, spec, context) -> None:
        """Every student of the space: what the dev front, and so the scratch rows, depend on."""
        jobs = self._student_jobs(spec, context, space=True)
        if not jobs:
            return
        log.info("%d jobs of students to build and score", len(jobs))
        with _pool(self.workers) as pool:
            for result in _as_done(pool, _student_job, jobs):
                self._add_students(result)

    def _student_jobs(self, spec, context, space: bool) -> list[tuple]:
        """The jobs of the space's students the table lacks (``space``), or of the paper path's models
        outside the space."""
        from search.space import candidates, label

        setup = self.setup
        done = {s["name"] for s in self.table["students"]}
        paper = {label(c): name for name, c in maltese.paper_path(setup.scale)}
        grid = candidates(spec, context.teacher_config)
        jobs = []
        if space:
            groups: dict[tuple, list[dict]] = {}
            for c in grid:
                name = label(c)
                if name not in done:
                    groups.setdefault((c.num_hidden_layers, c.intermediate_size, c.hidden_size), []).append(
                        {"candidate": dataclasses.asdict(c), "paper": name in paper, "paper_name": paper.get(name),
                         "space": True, "rungs": True})
            jobs = [sorted(group, key=lambda e: e["candidate"]["vocab_size"] is None) for group in groups.values()]
            # the largest first (longest-processing-time-first): the last jobs are small, so neither worker
            # waits long for the other at the end
            jobs.sort(key=lambda g: (g[0]["candidate"]["hidden_size"], g[0]["candidate"]["intermediate_size"]),
                      reverse=True)
            jobs = _interleave(jobs, lambda g: g[0]["candidate"]["num_hidden_layers"])
        else:
            for name, c in maltese.paper_path(setup.scale):
                if label(c) not in done and label(c) not in {label(g) for g in grid}:
                    jobs.append([{"candidate": dataclasses.asdict(c), "paper": True, "paper_name": name,
                                  "space": False, "rungs": False}])
        if not jobs:
            return []
        teachers = self.teachers(context)
        return [(context, setup.scale.name, job, teachers, self.table["key_inputs"]) for job in jobs]

    def _add_students(self, result: dict) -> None:
        self._built(result["builds"])
        _add_builds(self.table, result["builds"])
        self.table["students"] += result["students"]
        _own_costs(self.table)
        self.save()
        log.info("table: %d students", len(self.table["students"]))

    def _built(self, builds: list[dict]) -> None:
        """The run's record of the stage builds it made itself (the rest it found in the cache)."""
        made = self.session.setdefault("built", [])
        made += [b["key"] for b in builds if b["built"] and b["key"] not in made]

    def teachers(self, context) -> dict[str, str]:
        """The teacher's directory per student vocabulary (``"None"``: the full one): trimmed alike, the
        tokenizer and the ids of every student of that vocabulary."""
        teachers = {"None": context.plan.teacher}
        for vocab in sorted({str(v) for v in self.setup.space["vocab"]} - {"full", "None"}):
            built = _trimmed_teacher(context, int(vocab), self.table["key_inputs"])
            self._built(built["builds"])
            _add_builds(self.table, [{**b, "for_teacher": True} for b in built["builds"]])
            teachers[vocab] = built["model_dir"]
        return teachers

    # -- the last phase
    def last(self, spec, context) -> None:
        """The scratch rows, and beside them what nothing later needs: the paper path's models outside the
        space, and the teacher's and the random model's full rows. The scratch rows go first, the longest
        first (`scratch_jobs`); the rest fills the worker the paths leave free while the longest trains."""
        scratch = self.scratch_jobs(spec, context)
        paper = self._student_jobs(spec, context, space=False)
        references = [(name, context.plan.teacher if name == "teacher" else self._random(spec), spec, context,
                       self.setup.scale.name) for name in ("teacher", "random") if self.table[name] is None]
        if not (scratch or paper or references):
            return
        with _pool(self.workers) as pool:  # submitted in this order: the pool's queue keeps it
            done = {pool.submit(_scratch_job, job): self._add_scratch for job in scratch}
            done.update({pool.submit(_student_job, job): self._add_students for job in paper})
            done.update({pool.submit(_reference_job, job): self._add_reference for job in references})
            for future in concurrent.futures.as_completed(done):
                done[future](future.result())

    def scratch_jobs(self, spec, context) -> list[tuple]:
        """The jobs of the scratch rows the table lacks: each dev-front shape from random initialisation.
        A shape is the teacher's config with the student's sizes and the tokenizer of its vocabulary (the
        trimmed teacher's: the same pieces), so nothing of the student itself is needed: a resumed run on
        another machine does not rebuild it."""
        from pipeline import modeling

        students = [s for s in self.table["students"] if s.get("space")]
        front = sorted(_front(students), key=lambda r: r["params"])
        self.table["front"] = [r["name"] for r in front]
        best = max(front, key=lambda r: statistics.fmean(r["dev"][t] for t in TASKS))
        done = {(r["of"], r["budget"]) for r in self.table["scratch"]}
        wanted = [(r, "path", r["flops"]) for r in front]
        wanted.append((best, "path+teacher", best["flops"] + _pretraining_flops(context.plan.teacher, spec)))
        # the most FLOPs first (longest-processing-time-first): the run for the teacher's pretraining too
        # (12x a path's FLOPs on the CPU table) trains on one worker while the other takes the paths
        wanted = sorted((w for w in wanted if (w[0]["name"], w[1]) not in done), key=lambda w: -w[2])
        if not wanted:
            return []
        teachers = self.teachers(context)
        jobs = []
        for row, budget, flops in wanted:
            tokenizer_dir = teachers[str(row["candidate"]["vocab_size"])]
            config = {**modeling.load_config(tokenizer_dir), **row["config"]}
            jobs.append((row["name"], budget, flops, config, tokenizer_dir, spec, spec.evaluation,
                         spec.search.cache_dir, spec.teacher.adapt))
        return jobs

    def _add_scratch(self, row: dict) -> None:
        self.table["scratch"].append(row)
        self.save()

    def _add_reference(self, row: dict) -> None:
        self.table[row["name"]] = row
        self.save()


def _reference_job(args) -> dict:
    """The teacher's or the random model's full row: its evaluation, size and pretraining, and every
    cheap signal (against the teacher itself): what a trained model and an untrained one score, beside
    the students."""
    name, folder, spec, context, setup_name = args
    _worker_logging()
    from pipeline.trial import teacher_reference

    result = teacher_reference(folder, spec.data.tasks, spec.evaluation, spec.search.cache_dir)
    metrics = _pretraining_metrics(folder, spec)
    plan = context.plan
    signals = _signals(folder, plan, plan.teacher, _heldout(plan), setup_named(setup_name).signals)
    return {"name": name, "params": result["params"], "config": result["config"],
            "pretrain_steps": metrics.get("steps"), "heldout_loss": metrics.get("heldout_loss"),
            "flops": _pretraining_flops(folder, spec, metrics), "build_wall_s": metrics.get("seconds"),
            **_model_row(result), "signals": signals}


def _signals(model_dir: str, plan, teacher_dir: str, heldout: list[str], cfg) -> dict[str, dict]:
    """Every cheap signal of the model in ``model_dir`` (`pipeline.signals.measure`), the distillation
    loss against ``teacher_dir``, as the students' and the references' rows take them."""
    from pipeline.signals import measure

    return {signal: measure(signal, model_dir, heldout=heldout, teacher_dir=teacher_dir, distill=plan.truncate.distill,
                            tasks=plan.tasks, evaluation=plan.rung_evaluation, cfg=cfg) for signal in SIGNAL_NAMES}


def _pretraining_flops(folder: str, spec, metrics: dict | None = None) -> float:
    """FLOPs of a pretrained model's MLM training (its held-out passes included)."""
    from pipeline import modeling
    from pipeline.flops import mlm_training_flops

    metrics = _pretraining_metrics(folder, spec) if metrics is None else metrics
    return mlm_training_flops(modeling.load_config(folder), metrics, spec.teacher.adapt.max_length)


def _pretraining_metrics(folder: str, spec) -> dict:
    """A pretrained model's metrics, with its held-out passes derived from its settings when a build older
    than their counting left them out (one at the start, one every ``eval_every`` steps, one at the end)."""
    from pipeline import modeling
    from pipeline.corpus import read_corpus
    from pipeline.families import max_positions
    from pipeline.mlm import encode

    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    steps = metrics.get("steps") or 0
    if "heldout_evals" in metrics or not steps:
        return metrics
    adapt = spec.teacher.adapt
    length = min(adapt.max_length, max_positions(modeling.load_config(folder)))
    rows = encode(modeling.load_tokenizer(folder), read_corpus(spec.data.heldout), length, pack=adapt.pack)
    passes = 1 + steps // adapt.eval_every + (1 if steps % adapt.eval_every else 0)
    return {**metrics, "heldout_evals": passes, "heldout_tokens": sum(len(r) for r in rows), "derived": True}


def _interleave(jobs: list, key) -> list:
    """Jobs of different depths alternate, so the workers start on different depth distillations."""
    by: dict = {}
    for job in jobs:
        by.setdefault(key(job), []).append(job)
    queues = list(by.values())
    out = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def _as_done(pool, fn, jobs):
    futures = [pool.submit(fn, job) for job in jobs]
    for future in concurrent.futures.as_completed(futures):
        yield future.result()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same protocol at tiny sizes, in minutes")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LRL_SHARED_DATA", REPO.parent / "shared" / "data")),
                        help="the shared data folder (the one holding mt/)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default benchmarks/work/table-SCALE)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the table: a new file for a new table, the same file to resume (--quick: default "
                             "in the work folder)")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each (default 2)")
    parser.add_argument("--stop-after", choices=PHASES[:-1], default=None,
                        help="end after this phase (to time the phases before it); a later run resumes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    name = "quick" if args.quick else "cpu"
    setup = setup_named(name)
    work = (args.work or REPO / "benchmarks" / "work" / f"table-{name}").resolve()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.out is None and not args.quick:  # a default file would be one that a section cites
            raise UsageError("--out: name the table's file (a new one for a new table, the same one to resume)")
        out = (args.out or work / "maltese-table-quick.json").resolve()
        if not (args.data / "mt").is_dir():
            raise UsageError(f"--data {args.data}: no mt/ folder there (give the shared data folder)")
        run = Run(setup, args.data.resolve(), work, out, args.workers, argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run.run(args.stop_after)
    print(f"table: {len(run.table['students'])} students, {len(run.table['scratch'])} scratch rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
