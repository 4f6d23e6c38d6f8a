"""Loading a spec: YAML, ``--set`` overrides, checks across fields and against the teacher, and
errors a person can act on. The models themselves are in `search.schema`.

Errors. `load_spec` raises `SpecError` with one line per problem, every problem at once, each
naming the file and the field path (``specs/x.yaml: space.hidden[0]: ...``) or file, line and
column for YAML syntax errors (``specs/x.yaml:12:3: ...``). A relative path given with ``--set``
resolves against the current directory, one in the file against the file's folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.config import STAGES, TASKS
from pipeline.errors import UsageError
from pipeline.modeldir import check_model_dir
from pipeline.plan import size_problems
from pipeline.families import family_of, scratch_config
from search.schema import BUILTIN_METRICS, Space, Spec, resolve_data_path, resolve_model_path
from search.teachers import one_line, read_teacher_config

__all__ = [
    "SpecError",
    "apply_overrides",
    "check_against_teacher",
    "load_spec",
    "space_problems",
    "spec_problems",
    "teacher_folder_problems",
    "teacher_config",
]

logger = logging.getLogger(__name__)


class SpecError(UsageError):
    """A spec that cannot be used. ``problems`` holds one line per problem; ``str()`` joins them."""

    def __init__(self, problems: Iterable[str]):
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


# ----------------------------------------------------------------------------------------------
# Checks that need several fields or the teacher's config.json


def spec_problems(spec: Spec) -> list[tuple[str, str]]:
    """(field path, message) for cross-field problems the schema cannot express."""
    problems = space_problems(spec.space)
    if sorted(spec.stages.order) != sorted(STAGES):
        problems.append(("stages.order", f"must name each of {', '.join(STAGES)} exactly once, got {list(spec.stages.order)}"))
    tasks = list(spec.data.tasks)
    known = (*BUILTIN_METRICS, *tasks)
    if not spec.objectives:
        problems.append(("objectives", "at least one objective is needed"))
    seen: set[str] = set()
    for i, objective in enumerate(spec.objectives):
        path = f"objectives[{i}].metric"
        if objective.metric in seen:
            problems.append((path, f"{objective.metric!r} appears twice"))
        seen.add(objective.metric)
        if objective.metric in TASKS and objective.metric not in tasks:
            problems.append((path, f"task {objective.metric!r} is not in data.tasks ({', '.join(tasks) or 'none given'})"))
        elif objective.metric not in known:
            problems.append((path, f"unknown metric {objective.metric!r}; expected one of {', '.join(known)}"))
        elif objective.metric == "quality" and not tasks:
            problems.append((path, "quality is the mean task score and needs at least one task in data.tasks"))
    if spec.constraints.min_quality is not None and not tasks:
        problems.append(("constraints.min_quality", "needs at least one task in data.tasks"))
    build = spec.teacher.build
    if build is not None:
        for name in ("vocab_size", "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                     "max_length"):
            if getattr(build, name) < 1:
                problems.append((f"teacher.build.{name}", f"must be at least 1, got {getattr(build, name)}"))
        if build.num_attention_heads > 0 and build.hidden_size % build.num_attention_heads:
            problems.append(("teacher.build.hidden_size", f"{build.hidden_size} is not divisible by "
                             f"num_attention_heads={build.num_attention_heads}"))
    if spec.export is not None:
        alias = spec.export.alias
        metrics = [objective.metric for objective in spec.objectives]
        if alias.startswith("best-") and alias[len("best-"):] not in metrics:
            problems.append(("export.alias", f"{alias!r} needs the objective {alias[len('best-'):]!r}; "
                             f"the objectives are {', '.join(metrics)}"))
        elif not alias.startswith(("best-", "pareto-")):
            problems.append(("export.alias", f"{alias!r} is not an alias the search sets: best-<objective> or pareto-<k>"))
    return problems + _window_problems(spec) + _search_problems(spec)


def _search_problems(spec: Spec) -> list[tuple[str, str]]:
    """The fidelity, the screening and the budget: settings that cannot work."""
    problems = []
    fidelity, budget = spec.search.fidelity, spec.search.time_budget_s
    if budget is not None and budget <= 0:
        problems.append(("search.time_budget_s", f"must be more than 0 seconds, got {budget:g}"))
    screen = spec.search.screen
    if screen is not None and screen.signal in ("capped", "probe") and not spec.data.tasks:
        problems.append(("search.screen.signal", f"{screen.signal} scores the labelled tasks and data.tasks is empty; "
                         "add a task or screen by mlm"))
    if fidelity is not None:
        if fidelity.signal in ("capped", "probe") and not spec.data.tasks:
            problems.append(("search.fidelity.signal", f"{fidelity.signal} scores the labelled tasks and data.tasks is "
                             "empty; add a task or rank the rungs by mlm"))
        if fidelity.min_steps > fidelity.max_steps:
            problems.append(("search.fidelity.min_steps",
                             f"{fidelity.min_steps} is above max_steps={fidelity.max_steps}"))
        elif fidelity.reduction_factor >= 2 and fidelity.min_steps * fidelity.reduction_factor > fidelity.max_steps:
            problems.append(("search.fidelity.min_steps",
                             f"{fidelity.min_steps} x reduction_factor {fidelity.reduction_factor} is above "
                             f"max_steps={fidelity.max_steps}: no rung below the top, nothing to halve; lower min_steps"))
        if fidelity.reduction_factor < 2:
            problems.append(("search.fidelity.reduction_factor", f"must be at least 2, got {fidelity.reduction_factor}"))
        steps = spec.truncate.distill.steps
        if steps != fidelity.max_steps:
            problems.append(("search.fidelity.max_steps", f"{fidelity.max_steps} is not truncate.distill.steps={steps}: "
                             "the rungs share out the last distillation's one schedule; set them alike (left out, "
                             "truncate.distill.steps follows max_steps)"))
    return problems


def _rung_zero_problem(spec: Spec, which: str) -> list[tuple[str, str]]:
    """Rung 0 needs a training-free stage before the last distillation: where that is the depth
    distillation, prune or trim_vocab must come before it in ``stages.order`` (``which``: the candidates)."""
    order = list(spec.stages.order)
    if any(stage in order[: order.index("distill")] for stage in ("prune", "trim_vocab")):
        return []
    return [("search.fidelity.rung_zero", f"{which}, and no training-free stage (prune, trim_vocab) comes before it in "
             f"stages.order {order}: rung 0 would be the teacher's layers copied, with nothing to rank; "
             "leave rung_zero out or put a training-free stage first")]


def _fidelity_needs_distillation(spec: Spec, teacher: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Multi-fidelity works on distillation steps: some candidate must distil, and where a candidate's
    last distillation is the depth one (its hidden size the teacher's), that one's steps are the schedule."""
    fidelity = spec.search.fidelity
    if fidelity is None:
        return []
    shallower = any(layers < teacher["num_hidden_layers"] for layers in spec.space.layers)
    if fidelity.rung_zero and shallower:  # which candidates end with the depth distillation, if any
        order = list(spec.stages.order)
        if order.index("truncate") < order.index("distill"):
            problem = _rung_zero_problem(spec, "truncate comes before distill in stages.order, so shallower "
                                               "candidates end with the depth distillation")
        elif teacher["hidden_size"] in spec.space.hidden:
            problem = _rung_zero_problem(spec, f"candidates of hidden size {teacher['hidden_size']} (the teacher's) "
                                               "end with the depth distillation")
        else:
            problem = []
        if problem:
            return problem
    if shallower and teacher["hidden_size"] in spec.space.hidden and spec.distill.steps != fidelity.max_steps:
        return [("search.fidelity.max_steps", f"{fidelity.max_steps} is not distill.steps={spec.distill.steps}: "
                 f"candidates of hidden size {teacher['hidden_size']} (the teacher's) end with the depth distillation, "
                 "whose one schedule the rungs share out; set them alike")]
    if shallower or any(hidden < teacher["hidden_size"] for hidden in spec.space.hidden):
        return []
    return [("search.fidelity", "no candidate of the space distils (every layers and hidden choice is the "
             "teacher's), so there are no distillation steps to share out; remove search.fidelity")]


def _window_problems(spec: Spec) -> list[tuple[str, str]]:
    """Line windows that are empty or negative, and held-out text inside the training window."""
    problems = []
    windows = {}
    for name in ("corpus", "heldout"):
        source = getattr(spec.data, name)
        if source.skip_lines < 0:
            problems.append((f"data.{name}.skip_lines", f"must be 0 or more, got {source.skip_lines}"))
        if source.max_lines is not None and source.max_lines < 1:
            problems.append((f"data.{name}.max_lines", f"must be at least 1 (or null: all), got {source.max_lines}"))
        end = None if source.max_lines is None else source.skip_lines + source.max_lines
        windows[name] = (source.skip_lines, end)
    corpus, heldout = spec.data.corpus, spec.data.heldout
    same = (corpus.source, corpus.split, corpus.data_dir, corpus.data_files) == (
        heldout.source, heldout.split, heldout.data_dir, heldout.data_files)
    (c_start, c_end), (h_start, h_end) = windows["corpus"], windows["heldout"]
    if same and (h_end is None or h_end > c_start) and (c_end is None or c_end > h_start):
        problems.append(("data.heldout", f"lines {h_start}..{'end' if h_end is None else h_end - 1} of "
                         f"{heldout.source} are also training text (data.corpus reads lines {c_start}.."
                         f"{'end' if c_end is None else c_end - 1}); e.g. set data.corpus.skip_lines to "
                         f"{h_end if h_end is not None else 'the held-out size'} and give data.heldout a max_lines"))
    return problems


def space_problems(space: Space) -> list[tuple[str, str]]:
    """Empty choice lists and repeated choices."""
    problems = []
    for name in Space.model_fields:
        values = getattr(space, name)
        if not values:
            problems.append((f"space.{name}", "needs at least one choice"))
        for i, value in enumerate(values):
            if value in values[:i]:
                problems.append((f"space.{name}[{i}]", f"{value!r} appears twice"))
    return problems


# The space's choice lists and the config key each one sets.
_SPACE_KEYS = {"layers": "num_hidden_layers", "ffn": "intermediate_size", "hidden": "hidden_size", "vocab": "vocab_size"}


def check_against_teacher(space: Space, teacher_config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for every choice the teacher cannot yield (`pipeline.plan.size_problems`)."""
    problems = []
    for name, key in _SPACE_KEYS.items():
        for i, value in enumerate(getattr(space, name)):
            if value != "full":
                problems += [(f"space.{name}[{i}]", message) for _, message in size_problems(teacher_config, **{key: value})]
    return problems


def teacher_config(spec: Spec | str) -> dict[str, Any]:
    """The teacher's ``config.json`` as a dict, without weights, tokenizer or torch (`search.teachers`).

    A teacher built from scratch (``teacher.build``) has the config `pipeline.families.scratch_config`
    gives; its tokenizer is trained to exactly ``vocab_size`` tokens, so sizes are exact before it exists.

    A spec carries its teacher's config once read (its loading reads it; a hub teacher's is not
    fetched again), so every later step of one search (preflight, sizes, the trials' context) reads
    the same values; a copy is returned.

    Raises:
        SpecError: naming ``teacher.model`` when no config can be read or the family is unsupported.
    """
    if isinstance(spec, Spec) and spec._teacher_config is not None and spec._teacher_config[0] == spec.teacher:
        return dict(spec._teacher_config[1])  # a copy whose teacher changed (model_copy) reads its own
    if isinstance(spec, Spec) and spec.teacher.build is not None:
        build = dataclasses.asdict(spec.teacher.build)
        config = scratch_config(build.pop("family"), **build)
    else:
        model = spec.teacher.model if isinstance(spec, Spec) else spec
        try:
            config = dict(read_teacher_config(model))
            family_of(config)
        except (OSError, ValueError, KeyError, ImportError) as error:
            raise SpecError([f"teacher.model: {model}: {one_line(error)}"]) from None
    if isinstance(spec, Spec):
        spec._teacher_config = (spec.teacher, dict(config))
    return dict(config)


# ----------------------------------------------------------------------------------------------
# Loading


def load_spec(path: str | os.PathLike[str], overrides: Sequence[str] = (), *, check_teacher: bool = True) -> Spec:
    """Read, override, validate and resolve a spec file.

    Args:
        path: the YAML file; relative paths inside resolve against its folder.
        overrides: ``dotted.key=value`` strings; values are YAML (``space.hidden=[312,456]``).
        check_teacher: also read the teacher's ``config.json`` and check the space against it.

    Raises:
        SpecError: every problem found, one line each.
    """
    shown = str(path)
    raw = _read_yaml(Path(path))
    override_problems, raw, origins = apply_overrides(raw, overrides)
    _absolutize_overridden_paths(raw, origins, Path.cwd())
    base = Path(path).resolve().parent
    problems: list[tuple[str, str]] = []
    spec = None
    try:
        spec = Spec.model_validate(raw, context={"base_dir": base})
    except ValidationError as error:
        problems += [(_format_loc(e["loc"]), _format_error(e)) for e in error.errors()]
    if spec is not None:
        problems += spec_problems(spec)
        model, space = spec, spec.space
    else:  # still check what can be checked, so that every problem shows at once
        model = _teacher_model(raw, base)
        space = _try(Space, raw.get("space", {}), base)
        if space is not None:
            problems += space_problems(space)
    teacher_problems: list[str] = []
    if check_teacher and model is not None:
        try:
            config = teacher_config(model)  # the spec when it validated: it carries the config from here on
        except SpecError as error:
            teacher_problems = list(error.problems)
        else:
            if space is not None:
                problems += check_against_teacher(space, config)
            if spec is not None:
                problems += _fidelity_needs_distillation(spec, config)
                teacher_problems += teacher_folder_problems(spec)
    lines = [_with_origin(f"{shown}: {loc}: {message}", loc, origins) for loc, message in problems]
    lines += [_with_origin(f"{shown}: {line}", "teacher.model", origins) for line in teacher_problems]
    if override_problems or lines:
        raise SpecError(override_problems + lines)
    if spec.teacher.trust_remote_code:
        logger.warning("%s: teacher.trust_remote_code is true: loading %s runs Python code from its folder or "
                       "repository; use it only for a teacher whose code you trust", shown, spec.teacher.model)
    return spec


def teacher_folder_problems(spec: Spec) -> list[str]:
    """``teacher.model: ...`` lines for a local teacher folder that asks to run its own code or holds only
    pickled weights, unless the spec opts in (``teacher.trust_remote_code``, ``teacher.allow_pickle``)."""
    if spec.teacher.model is None:  # built from scratch here
        return []
    path = Path(spec.teacher.model)
    if not path.is_absolute() or not path.is_dir():
        return []
    try:
        check_model_dir(path, trust_remote_code=spec.teacher.trust_remote_code,
                        allow_pickle=spec.teacher.allow_pickle, complete=False)
    except UsageError as error:
        return [f"teacher.model: {error}"]
    return []


def _teacher_model(raw: Mapping[str, Any], base: Path) -> str | None:
    teacher = raw.get("teacher")
    model = teacher.get("model") if isinstance(teacher, dict) else None
    return resolve_model_path(model, base) if isinstance(model, str) and model else None


def _try(model: type[BaseModel], data: Any, base: Path) -> Any:
    try:
        return model.model_validate(data, context={"base_dir": base})
    except ValidationError:
        return None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError([f"{path}: no such file" if not path.exists() else f"{path}: not a file"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SpecError([f"{where}: {error.problem or error.context or 'invalid YAML'}"]) from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as error:
        raise SpecError([f"{path}: {one_line(error)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError([f"{path}: a spec is a mapping of sections (teacher, language, data, ...), got {type(data).__name__}"])
    return data


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    """Apply ``dotted.key=value`` overrides to a raw spec mapping.

    Returns:
        (problems, new mapping, {dotted key: the override string}) - problems name the ``--set``.
    """
    data = _copy(raw)
    problems, origins = [], {}
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            problems.append(f"--set {item}: expected dotted.key=value, e.g. space.hidden=[312,456]")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            problems.append(f"--set {item}: the value is not valid YAML ({one_line(error)})")
            continue
        node = data
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                if part in node and node[part] is not None:
                    problems.append(f"--set {item}: {'.'.join(parts[: depth + 1])} is not a mapping")
                    break
                node[part] = {}
            node = node[part]
        else:
            node[parts[-1]] = value
            origins[".".join(parts)] = item
    return problems, data, origins


# Fields that hold local paths, with the resolver for each ("*" matches any task name).
_PATH_FIELDS: dict[tuple[str, ...], Any] = {
    ("teacher", "model"): resolve_model_path,
    ("data", "corpus", "source"): resolve_data_path,
    ("data", "heldout", "source"): resolve_data_path,
    ("data", "tasks", "*", "source"): resolve_data_path,
    ("search", "storage_path"): resolve_data_path,
    ("search", "cache_dir"): resolve_data_path,
    ("search", "synthetic_dir"): resolve_data_path,
}


def _absolutize_overridden_paths(raw: dict[str, Any], origins: Mapping[str, str], cwd: Path) -> None:
    """Paths given with ``--set`` are relative to the current directory, not to the spec's folder."""
    for pattern, resolve in _PATH_FIELDS.items():
        for parts in _matching_paths(raw, pattern):
            dotted = ".".join(parts)
            if any(dotted == key or dotted.startswith(key + ".") for key in origins):
                node = raw
                for part in parts[:-1]:
                    node = node[part]
                node[parts[-1]] = resolve(node[parts[-1]], cwd)


def _matching_paths(node: Any, pattern: tuple[str, ...], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not pattern:
        return [prefix] if isinstance(node, str) else []
    if not isinstance(node, dict):
        return []
    keys = [key for key in node if isinstance(key, str)] if pattern[0] == "*" else [pattern[0]] if pattern[0] in node else []
    return [match for key in keys for match in _matching_paths(node[key], pattern[1:], (*prefix, key))]


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _with_origin(line: str, loc: str, origins: Mapping[str, str]) -> str:
    for key, item in origins.items():
        if loc == key or loc.startswith((key + ".", key + "[")) or key.startswith(loc + "."):
            return f"{line} (from --set {item})"
    return line


# ----------------------------------------------------------------------------------------------
# Pydantic errors as one line each


def _format_loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _format_error(error: Mapping[str, Any]) -> str:
    kind, loc = error["type"], error["loc"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _keys_at(loc[:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if kind in ("missing", "missing_argument"):
        return "required field missing"
    message = error["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
        return message
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value)
        message += f" (got {text if len(text) <= 60 else text[:57] + '...'})"
    return message


def _keys_at(loc: Sequence[Any]) -> list[str]:
    """Field names of the model or dataclass at ``loc`` in `Spec` (best effort; [] if unknown)."""
    tp: Any = Spec
    try:
        for part in loc:
            tp = _unwrap(tp)
            if isinstance(part, int):
                tp = typing.get_args(tp)[0]
            elif isinstance(tp, type) and issubclass(tp, BaseModel):
                tp = tp.model_fields[part].annotation
            elif dataclasses.is_dataclass(tp):
                tp = typing.get_type_hints(tp)[part]
            elif typing.get_origin(tp) is dict:
                tp = typing.get_args(tp)[1]
            else:
                return []
        tp = _unwrap(tp)
    except (KeyError, IndexError, TypeError, NameError):
        return []
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    if dataclasses.is_dataclass(tp):
        return [field.name for field in dataclasses.fields(tp)]
    return []


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp

