"""The model card of a student: a pure function from plain data to a Hugging Face ``README.md``.

`model_card` writes YAML metadata (``language``, ``license``, ``base_model`` = the teacher, ``tags``,
``model-index`` with every task's dev and test result) and a Markdown body: lineage (teacher, the
stages that ran with their settings and outcomes), sizes (total, embedding, transformer-layer and
head parameters, disk), scores against the teacher (dev selects, test reports) and a latency table.
It reads nothing and writes nothing; the search's tracker and the export command call it with what
they know (`card_data` builds the data of a trial).

The card data is a JSON-able dict; every key but ``name`` may be missing:

- ``name``, ``language``, ``license``, ``teacher`` (a hub id or path), ``tags`` (extra tags);
- ``config`` and ``teacher_config``: ``num_hidden_layers, hidden_size, intermediate_size, vocab_size``;
- ``sizes`` and ``teacher_sizes``: `pipeline.sizes.parameter_groups` plus ``disk_mb``;
- ``stages``: ``{stage: {"settings": {...}, "outcome": {...}}}`` in the order they ran;
- ``tasks``: ``{task: {"metric", "dataset", "dev", "test", "teacher_dev", "teacher_test"}}``;
- ``latency``: rows ``{"runtime", "batch", "seq_len", "threads", "ms", "teacher_ms"}``;
- ``checks``: ``{"text": where the check text came from, "onnx": max abs diff, "onnx-int8": cosine}``;
- ``source``: where the student comes from (``{"run_id", "experiment", "trial", "tracking_uri"}``);
- ``notes``: sentences about the stages a reader should know of (a vocabulary trimmed to fewer tokens
  than asked), shown under the lineage;
- ``fidelity``: a multi-fidelity student's ``{"rung", "of", "scoring", "rescored"}``: its last
  distillation trained ``rung`` steps of an ``of``-step schedule, and ``scoring`` says how it was
  scored: ``full``, ``rung evaluation`` (the search's cheaper one) or ``signal <name>`` (a cheap
  signal instead of the tasks); ``rescored``: scored in full after the search.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["TASK_TYPES", "card_data", "model_card", "read_front_matter"]

# Hugging Face task types of the four downstream tasks.
TASK_TYPES = {"sentiment": "text-classification", "topic": "text-classification",
              "ner": "token-classification", "pos": "token-classification"}
_TASK_NAMES = {"sentiment": "Sentiment analysis", "topic": "Topic classification",
               "ner": "Named-entity recognition", "pos": "Part-of-speech tagging"}
_SIZE_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")


def model_card(data: Mapping[str, Any]) -> str:
    """The ``README.md`` text of a student: YAML front matter, then the Markdown body.

    Args:
        data: the card data described in the module docstring.

    Returns:
        The card; ``yaml.safe_load`` of the text between the first two ``---`` lines gives the metadata.
    """
    front = yaml.safe_dump(_metadata(data), sort_keys=False, allow_unicode=True)
    parts = [f"---\n{front}---\n", f"# {data['name']}\n", _summary(data), _lineage(data), _sizes(data),
             _scores(data), _latency(data), _usage(data)]
    return "\n".join(part for part in parts if part).rstrip() + "\n"


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata of a card (``{}`` when it has none)."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 4)
    return yaml.safe_load(text[4:end]) or {} if end > 0 else {}


def card_data(result: Mapping[str, Any], *, name: str, language: str | None = None, license: str | None = None,
              teacher: str | None = None, teacher_config: Mapping[str, Any] | None = None,
              reference: Mapping[str, Any] | None = None, latency: Mapping[str, Any] | None = None,
              source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The card data of one trial, from `pipeline.trial.run_trial`'s result.

    Args:
        result: the trial's result (``config``, ``sizes``, ``params``, ``disk_mb``, ``stages`` and
            ``settings`` (the lineage), ``scores``, ``test_scores``, ``tasks``, ``latency_ms``).
        name: the card's title.
        language, license, teacher: metadata (the teacher becomes ``base_model``).
        teacher_config: the teacher's ``config.json`` values (its shape and sizes).
        reference: the teacher's flat reference (``<task>``, ``test_<task>``, ``latency_ms``, ``params``).
        latency: the latency settings the trial's ``latency_ms`` was measured with.
        source: where the student comes from (run id, experiment, trial).
    """
    from pipeline.sizes import parameter_groups

    reference = reference or {}
    data: dict[str, Any] = {"name": name, "language": language, "license": license, "teacher": teacher,
                            "config": dict(result.get("config") or {}), "source": dict(source or {})}
    sizes = dict(result.get("sizes") or ({"total": result["params"]} if result.get("params") else {}))
    if sizes and result.get("disk_mb") is not None:
        sizes["disk_mb"] = result["disk_mb"]
    data["sizes"] = sizes
    teacher_sizes = parameter_groups(teacher_config) if teacher_config else (
        {"total": reference["params"]} if reference.get("params") else {})
    if teacher_sizes and reference.get("disk_mb"):
        teacher_sizes["disk_mb"] = reference["disk_mb"]
    data["teacher_sizes"] = teacher_sizes
    if teacher_config:
        data["teacher_config"] = {key: teacher_config[key] for key in _SIZE_KEYS if key in teacher_config}
    settings = result.get("settings") or {}
    data["stages"] = {stage: {"settings": dict(settings.get(stage) or {}), "outcome": _outcome(outcome)}
                      for stage, outcome in (result.get("stages") or {}).items()}
    tasks = {}
    for task, dev in (result.get("scores") or {}).items():
        detail = (result.get("tasks") or {}).get(task) or {}
        tasks[task] = {"metric": detail.get("metric"), "dataset": detail.get("data"), "dev": dev,
                       "test": (result.get("test_scores") or {}).get(task), "teacher_dev": reference.get(task),
                       "teacher_test": reference.get(f"test_{task}")}
    data["tasks"] = tasks
    if result.get("notes"):
        data["notes"] = list(result["notes"])
    if result.get("fidelity"):
        data["fidelity"] = dict(result["fidelity"])
    if result.get("latency_ms") is not None and latency:
        data["latency"] = [{**dict(latency), "ms": result["latency_ms"], "teacher_ms": reference.get("latency_ms")}]
    return data


def _outcome(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The numbers of a stage's ``metrics.json`` worth a card: losses, steps, time."""
    keep = ("steps", "stop_at", "resumed_from", "loss_start", "loss_end", "heldout_loss", "heldout_loss_start",
            "seconds", "vocab_size", "vocab_size_asked", "kept", "coverage")
    return {key: value for key, value in (metrics or {}).items() if key in keep and value is not None}


# ---------------------------------------------------------------- metadata


def _metadata(data: Mapping[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if data.get("language"):
        meta["language"] = [data["language"]]
    meta["license"] = data.get("license") or "other"
    if data.get("teacher"):
        meta["base_model"] = data["teacher"]
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "fill-mask"
    stages = list(data.get("stages") or {})
    meta["tags"] = ["lrl-compress", "compressed", *(s.replace("_", "-") for s in stages), *(data.get("tags") or [])]
    results = []
    for task, entry in (data.get("tasks") or {}).items():
        for split, key in (("validation", "dev"), ("test", "test")):
            if entry.get(key) is None:
                continue
            metric = entry.get("metric") or "score"
            results.append({
                "task": {"type": TASK_TYPES.get(task, task), "name": _TASK_NAMES.get(task, task)},
                "dataset": {"name": f"{task} ({split})", "type": str(entry.get("dataset") or task), "split": split},
                "metrics": [{"type": metric, "value": round(float(entry[key]), 4), "name": f"{key} {metric}"}],
            })
    if results:
        meta["model-index"] = [{"name": data["name"], "results": results}]
    return meta


# ---------------------------------------------------------------- body


def _summary(data: Mapping[str, Any]) -> str:
    config = data.get("config") or {}
    shape = "/".join(str(config.get(key, "?")) for key in _SIZE_KEYS)
    teacher = data.get("teacher") or "its teacher"
    lines = [f"A compressed student of `{teacher}` for language `{data.get('language') or '?'}`, made by "
             "lrl-compress (distillation, structured pruning, hidden-size truncation and vocabulary trimming; "
             f"Gurgurov et al. 2025). Shape (layers/hidden/FFN/vocabulary): {shape}."]
    fidelity = data.get("fidelity") or {}
    if fidelity:
        scoring = str(fidelity.get("scoring") or "")
        if fidelity.get("rescored"):
            scored = "its scores were taken in full after the search (rescored)"
        elif scoring == "full":
            scored = "its scores were taken in full"
        elif scoring.startswith("signal "):
            scored = f"it was not evaluated on the tasks: the search ranked it by its {scoring.split()[1]} signal"
        else:
            scored = "its scores were taken with the search's cheaper rung evaluation"
        lines.append(f"Multi-fidelity: its last distillation trained {fidelity['rung']:,} steps of a "
                     f"{fidelity['of']:,}-step schedule (rung {fidelity['rung']:,}); {scored}.")
    source = data.get("source") or {}
    if source:
        lines.append("Source: " + ", ".join(f"{key} `{value}`" for key, value in source.items() if value) + ".")
    return "\n".join(lines) + "\n"


def _lineage(data: Mapping[str, Any]) -> str:
    stages = data.get("stages") or {}
    lines = ["## Lineage\n", f"Teacher: `{data.get('teacher') or 'unknown'}`"
             + (f" ({_shape(data['teacher_config'])})" if data.get("teacher_config") else "") + "."]
    if not stages:
        return "\n".join(lines + ["", "The stages that made this model were not recorded.\n"])
    lines += ["", "| # | stage | settings | outcome |", "|---:|---|---|---|"]
    for number, (stage, entry) in enumerate(stages.items(), 1):
        lines.append(f"| {number} | {stage} | {_compact(entry.get('settings'))} | {_compact(entry.get('outcome'))} |")
    notes = data.get("notes") or []
    if notes:
        lines += ["", *(f"Note: {note}." for note in notes)]
    return "\n".join(lines) + "\n"


def _sizes(data: Mapping[str, Any]) -> str:
    sizes, teacher = data.get("sizes") or {}, data.get("teacher_sizes") or {}
    if not sizes:
        return ""
    rows = [("parameters, total", "total"), ("embedding parameters (tied decoder once)", "embeddings"),
            ("transformer-layer parameters", "layers"), ("MLM-head parameters", "head"), ("disk (MB)", "disk_mb")]
    lines = ["## Size\n", "| | student | teacher | student / teacher |", "|---|---:|---:|---:|"]
    for label, key in rows:
        if sizes.get(key) is None:
            continue
        ratio = f"{sizes[key] / teacher[key]:.1%}" if teacher.get(key) else ""
        lines.append(f"| {label} | {_number(sizes[key])} | {_number(teacher.get(key))} | {ratio} |")
    return "\n".join(lines) + "\n"


def _scores(data: Mapping[str, Any]) -> str:
    tasks = data.get("tasks") or {}
    if not tasks:
        return "## Scores\n\nNo task was evaluated.\n"
    lines = ["## Scores\n",
             "Dev scores chose this student (the search selects on dev); test scores are reported only.\n",
             "| task | metric | dev | test | teacher dev | teacher test | test, share of teacher |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for task, entry in tasks.items():
        share = (f"{entry['test'] / entry['teacher_test']:.1%}"
                 if entry.get("test") is not None and entry.get("teacher_test") else "")
        lines.append(f"| {task} | {entry.get('metric') or ''} | {_score(entry.get('dev'))} | {_score(entry.get('test'))} "
                     f"| {_score(entry.get('teacher_dev'))} | {_score(entry.get('teacher_test'))} | {share} |")
    return "\n".join(lines) + "\n"


def _latency(data: Mapping[str, Any]) -> str:
    rows = data.get("latency") or []
    if not rows:
        return ""
    lines = ["## Latency\n", "Median of timed forward passes of the encoder after warm-up (input ids and attention "
             "mask to the last hidden state).\n",
             "| runtime | batch | sequence | threads | student ms | teacher ms | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        teacher = row.get("teacher_ms")
        speedup = f"{teacher / row['ms']:.1f}x" if teacher and row.get("ms") else ""
        lines.append(f"| {row.get('runtime')} | {row.get('batch')} | {row.get('seq_len')} | {row.get('threads')} "
                     f"| {_ms(row.get('ms'))} | {_ms(teacher)} | {speedup} |")
    checks = data.get("checks") or {}
    if checks:
        notes = []
        if checks.get("onnx") is not None:
            notes.append(f"ONNX fp32 against PyTorch: max abs difference {checks['onnx']:.2e}")
        if checks.get("onnx-int8") is not None:
            notes.append(f"ONNX int8 against PyTorch: mean cosine similarity {checks['onnx-int8']:.4f}")
        if checks.get("text"):
            notes.append(f"checked on {checks['text']}")
        lines += ["", "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def _usage(data: Mapping[str, Any]) -> str:
    return ("## Use\n\n```python\nfrom transformers import AutoModel, AutoTokenizer\n\n"
            "model = AutoModel.from_pretrained(PATH)\ntokenizer = AutoTokenizer.from_pretrained(PATH)\n```\n\n"
            "`model.onnx` / `model.int8.onnx`, when present, map `input_ids` and `attention_mask` "
            "(`[batch, sequence]`, int64) to `last_hidden_state` (ONNX Runtime).\n")


def _shape(config: Mapping[str, Any]) -> str:
    return "layers/hidden/FFN/vocabulary " + "/".join(str(config.get(key, "?")) for key in _SIZE_KEYS)


def _compact(value: Any) -> str:
    if not value:
        return ""
    items = []
    for key, item in value.items():
        if isinstance(item, float):
            item = f"{item:.4g}"
        elif isinstance(item, (dict, list)):
            item = json.dumps(item, separators=(",", ":"), default=str)
        items.append(f"{key}={item}")
    return ", ".join(items).replace("|", "\\|")


def _number(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def _score(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


def _ms(value: Any) -> str:
    return "" if value is None else f"{value:.2f}"
