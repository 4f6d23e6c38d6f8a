"""The search spec: frozen Pydantic models of the YAML file, loading, and checks against the teacher.

Every default of the service lives here or, for the stage settings, in `pipeline.config` (whose
dataclasses are used as field types directly). A spec is data: loading resolves relative paths
once and never touches weights, data, Ray or MLflow.

Paths. A relative local path in a spec resolves against the folder of the spec file (one given
with ``--set`` against the current directory), and ``~`` expands; the loaded spec holds absolute paths, so Ray workers in another
working directory can use them. ``hf:...`` and ``synthetic:...`` URIs and Hugging Face model ids
(``org/name``) pass through unchanged. ``teacher.model`` is a local path when it starts with
``.``, ``/`` or ``~`` or names something that exists beside the spec; otherwise it is a hub id
(an ``hf:`` prefix is dropped). Data sources that are not ``hf:``/``synthetic:`` URIs are paths.

Errors. `load_spec` raises `SpecError` with one line per problem, every problem at once, each
naming the file and the field path (``specs/x.yaml: space.hidden[0]: ...``) or file, line and
column for YAML syntax errors (``specs/x.yaml:12:3: ...``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.config import (
    STAGES,
    TASKS,
    AdaptConfig,
    CorpusSource,
    DistillConfig,
    EvalConfig,
    InitStrategy,
    PruneConfig,
    TaskSource,
    TrimVocabConfig,
    TruncateConfig,
)
from pipeline.errors import UsageError
from pipeline.sizes import family_of
from search.teachers import BUILTIN_TEACHER_CONFIGS, one_line, read_teacher_config

__all__ = [
    "BUILTIN_METRICS",
    "BUILTIN_TEACHER_CONFIGS",
    "REPO_ROOT",
    "Constraints",
    "Data",
    "MlflowSettings",
    "Objective",
    "RaySettings",
    "Resources",
    "SearchSettings",
    "Space",
    "Spec",
    "SpecError",
    "Stages",
    "Teacher",
    "apply_overrides",
    "check_against_teacher",
    "default_direction",
    "load_spec",
    "resolve_data_path",
    "resolve_model_path",
    "resolve_teacher_config",
    "space_problems",
    "spec_problems",
]

logger = logging.getLogger(__name__)

# The checkout this package runs from: default home of the MLflow store and the caches.
REPO_ROOT = Path(__file__).resolve().parents[1]

BUILTIN_METRICS = ("quality", "params", "latency_ms", "disk_mb")
_METRIC_DIRECTIONS = {"quality": "max", "params": "min", "latency_ms": "min", "disk_mb": "min"}


class SpecError(UsageError):
    """A spec that cannot be used. ``problems`` holds one line per problem; ``str()`` joins them."""

    def __init__(self, problems: Iterable[str]):
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


# ----------------------------------------------------------------------------------------------
# Path handling


def _base_dir(info: ValidationInfo | None) -> Path:
    context = info.context if info is not None else None
    if context and context.get("base_dir"):
        return Path(context["base_dir"])
    return Path.cwd()


def _is_uri(value: str) -> bool:
    return value.startswith(("hf:", "synthetic:")) or "://" in value


def _local_path(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def resolve_data_path(value: str, base: Path) -> str:
    """A data source: URIs pass through, anything else is a path made absolute against ``base``."""
    return value if _is_uri(value) else _local_path(value, base)


def resolve_model_path(value: str, base: Path) -> str:
    """A model: a local path (made absolute) or a hub id / ``synthetic:`` URI (unchanged)."""
    if value.startswith("hf:"):
        return value[3:]
    if value.startswith("synthetic:"):
        return value
    if value.startswith((".", "/", "~")) or (base / value).exists():
        return _local_path(value, base)
    return value


# ----------------------------------------------------------------------------------------------
# Models


class _Section(BaseModel):
    """Frozen, unknown keys rejected; a partial mapping for a dataclass-typed field is merged over
    that field's default, so ``evaluation: {topic: {lr: 1e-4}}`` keeps topic's other defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _merge_over_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            if isinstance(merged.get(name), dict):
                default = field.get_default(call_default_factory=True)
                if dataclasses.is_dataclass(default):
                    merged[name] = _deep_merge(dataclasses.asdict(default), merged[name])
        return merged


def _deep_merge(base: dict, override: Mapping) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class Teacher(_Section):
    """The model to compress and its optional language adaptation (stage 0).

    ``model``: a local Hugging Face directory, a hub id (``FacebookAI/xlm-roberta-base``) or
    ``synthetic:NAME/teacher``. The family (XLM-R or BERT) comes from its config's ``model_type``.
    """

    model: str = Field(min_length=1)
    adapt: AdaptConfig = AdaptConfig()

    @field_validator("model")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        return resolve_model_path(value, _base_dir(info))


class Data(_Section):
    """Distillation corpus, held-out text (pruning importance, model selection) and the tasks."""

    corpus: CorpusSource
    heldout: CorpusSource
    tasks: dict[Literal["sentiment", "topic", "ner", "pos"], TaskSource] = {}

    @field_validator("corpus", "heldout")
    @classmethod
    def _resolve_corpus(cls, value: CorpusSource, info: ValidationInfo) -> CorpusSource:
        return dataclasses.replace(value, source=resolve_data_path(value.source, _base_dir(info)))

    @field_validator("tasks")
    @classmethod
    def _resolve_tasks(cls, value: dict[str, TaskSource], info: ValidationInfo) -> dict[str, TaskSource]:
        base = _base_dir(info)
        return {name: dataclasses.replace(src, source=resolve_data_path(src.source, base)) for name, src in value.items()}


StageName = Literal["distill", "prune", "truncate", "trim_vocab"]


class Stages(_Section):
    """Order of the compression stages; a stage that leaves a candidate unchanged is skipped."""

    order: tuple[StageName, ...] = STAGES


def _vocab_choice(value: Any) -> int | str:
    if value == "full" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError(f"expected a positive integer or 'full', got {value!r}")


PositiveInt = Annotated[int, Strict(), Field(gt=0)]
VocabChoice = Annotated[Union[int, str], PlainValidator(_vocab_choice)]


class Space(_Section):
    """Categorical choices of the search; every combination is a candidate student.

    A single value stands for a one-element list. ``vocab: full`` keeps the teacher's vocabulary.
    Defaults are the paper's path: 6 layers, FFN 2048, hidden 564/456/312, vocabulary 40,000.
    """

    layers: tuple[PositiveInt, ...] = (6,)
    ffn: tuple[PositiveInt, ...] = (2048,)
    hidden: tuple[PositiveInt, ...] = (564, 456, 312)
    vocab: tuple[VocabChoice, ...] = (40_000,)
    init: tuple[InitStrategy, ...] = ("stride",)

    @field_validator("layers", "ffn", "hidden", "vocab", "init", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return value if isinstance(value, (list, tuple)) else [value]


class Objective(_Section):
    """One objective: ``quality`` (mean task score), ``params``, ``latency_ms``, ``disk_mb`` or a
    task name from ``data.tasks`` (that task's score). ``direction`` defaults to ``max`` for
    quality and task scores and ``min`` for the others."""

    metric: str
    direction: Literal["max", "min"]

    @model_validator(mode="before")
    @classmethod
    def _default_direction(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("direction") is None and isinstance(data.get("metric"), str):
            return {**data, "direction": default_direction(data["metric"])}
        return data


class Constraints(_Section):
    """Limits a candidate must meet to count; ``None`` means no limit."""

    max_params: int | None = Field(default=None, gt=0)
    min_quality: float | None = None
    max_latency_ms: float | None = Field(default=None, gt=0)


class Resources(_Section):
    """Resources of one trial; fractions share a device between trials."""

    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)


class SearchSettings(_Section):
    """The sampler and how many trials run, where, and with which budget.

    ``max_failures``: retries of a crashed trial (Ray's ``FailureConfig.max_failures``); a trial
    whose training diverges is recorded as failed either way. ``storage_path`` (Ray results,
    default ``<repo>/.cache/ray``) and ``cache_dir`` (stage outputs shared by trials, default
    ``<repo>/.cache/stages``) are made absolute; on a multi-node cluster both must be on storage
    every node sees.
    """

    sampler: Literal["nsga2", "tpe"] = "nsga2"
    num_samples: PositiveInt = 20
    max_concurrent: PositiveInt = 1
    resources: Resources = Resources()
    seed: int = 0
    max_failures: int = Field(default=0, ge=0)
    storage_path: str | None = Field(default=None, validate_default=True)
    cache_dir: str | None = Field(default=None, validate_default=True)

    @field_validator("storage_path", "cache_dir")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str:
        if value is None:
            sub = "ray" if info.field_name == "storage_path" else "stages"
            return str(REPO_ROOT / ".cache" / sub)
        if "://" in value:  # s3://, gs://: storage for multi-node runs
            return value
        return _local_path(value, _base_dir(info))


class RaySettings(_Section):
    """``address``: ``local`` starts a private Ray for the run; ``auto`` joins the cluster of this
    node; ``HOST:PORT`` or ``ray://HOST:10001`` names one."""

    address: str = Field(default="local", min_length=1)


class MlflowSettings(_Section):
    """Tracking. ``tracking_uri`` defaults to ``sqlite:///<repo>/mlflow/mlflow.db``; a relative
    SQLite path resolves against the spec's folder. ``artifact_location`` defaults to the folder
    ``artifacts`` beside a SQLite database (else the server's default). ``experiment`` defaults to
    ``compress-<language>``."""

    tracking_uri: str | None = Field(default=None, validate_default=True)
    artifact_location: str | None = Field(default=None, validate_default=True)
    experiment: str | None = None

    @field_validator("tracking_uri")
    @classmethod
    def _resolve_uri(cls, value: str | None, info: ValidationInfo) -> str:
        if value is None:
            return f"sqlite:///{REPO_ROOT / 'mlflow' / 'mlflow.db'}"
        if value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
            return "sqlite:///" + _local_path(value[len("sqlite:///"):], _base_dir(info))
        if "://" not in value:  # a plain folder or file path
            return _local_path(value, _base_dir(info))
        return value

    @field_validator("artifact_location")
    @classmethod
    def _resolve_artifacts(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            uri = info.data.get("tracking_uri") or ""
            if uri.startswith("sqlite:///"):
                return (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
            return None
        if "://" in value:
            return value
        return Path(_local_path(value, _base_dir(info))).as_uri()


class Spec(_Section):
    """A compression search: teacher, language and data, stage settings, space, objectives,
    constraints, search, Ray and MLflow settings."""

    teacher: Teacher
    language: str = Field(min_length=1)
    data: Data
    stages: Stages = Stages()
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    truncate: TruncateConfig = TruncateConfig()
    trim_vocab: TrimVocabConfig = TrimVocabConfig()
    evaluation: EvalConfig = EvalConfig()
    space: Space = Space()
    objectives: tuple[Objective, ...] = (
        Objective(metric="quality", direction="max"),
        Objective(metric="params", direction="min"),
    )
    constraints: Constraints = Constraints()
    search: SearchSettings = SearchSettings()
    ray: RaySettings = RaySettings()
    mlflow: MlflowSettings = MlflowSettings()

    @model_validator(mode="before")
    @classmethod
    def _default_experiment(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("language"), str):
            return data
        section = data.get("mlflow")
        if section is None:
            section = {}
        if isinstance(section, dict) and section.get("experiment") is None:
            data = {**data, "mlflow": {**section, "experiment": f"compress-{data['language']}"}}
        return data

    @property
    def measures_latency(self) -> bool:
        """Whether trials must measure latency (an objective or a constraint uses it)."""
        return self.constraints.max_latency_ms is not None or any(
            objective.metric == "latency_ms" for objective in self.objectives
        )


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


def check_against_teacher(space: Space, teacher_config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for every choice the teacher cannot yield.

    A student has at most the teacher's layers, FFN width, hidden size and vocabulary, and a hidden
    size the teacher's attention heads divide (each keeps ``hidden / heads`` dimensions).
    """
    heads = int(teacher_config["num_attention_heads"])
    limits = {
        "layers": ("num_hidden_layers", int(teacher_config["num_hidden_layers"])),
        "ffn": ("intermediate_size", int(teacher_config["intermediate_size"])),
        "hidden": ("hidden_size", int(teacher_config["hidden_size"])),
        "vocab": ("vocab_size", int(teacher_config["vocab_size"])),
    }
    problems = []
    for name, (key, limit) in limits.items():
        for i, value in enumerate(getattr(space, name)):
            if value == "full":
                continue
            if value > limit:
                problems.append((f"space.{name}[{i}]", f"{value} is larger than the teacher's {key}={limit}"))
            elif name == "hidden" and value % heads:
                problems.append((f"space.{name}[{i}]", f"{value} is not divisible by num_attention_heads={heads}"))
    return problems


# ----------------------------------------------------------------------------------------------
# The teacher's config.json


def resolve_teacher_config(spec: Spec | str) -> dict[str, Any]:
    """The teacher's ``config.json`` as a dict, without weights, tokenizer or torch.

    Local directory: its ``config.json``. ``synthetic:NAME/teacher``:
    ``pipeline.synthetic.teacher_config(NAME)``. Hub id: the copy in the local Hugging Face cache,
    else a download of that one file (unless ``HF_HUB_OFFLINE``), else the built-in copy of a
    well-known teacher (with a notice on stderr).

    Raises:
        SpecError: naming ``teacher.model`` when no config can be read.
    """
    model = spec.teacher.model if isinstance(spec, Spec) else spec
    try:
        config = read_teacher_config(model)
        family_of(config)
    except (OSError, ValueError, KeyError, ImportError) as error:
        raise SpecError([f"teacher.model: {model}: {one_line(error)}"]) from None
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
        model, space = spec.teacher.model, spec.space
    else:  # still check what can be checked, so that every problem shows at once
        model = _teacher_model(raw, base)
        space = _try(Space, raw.get("space", {}), base)
        if space is not None:
            problems += space_problems(space)
    teacher_problems: list[str] = []
    if check_teacher and model is not None:
        try:
            config = resolve_teacher_config(model)
        except SpecError as error:
            teacher_problems = list(error.problems)
        else:
            if space is not None:
                problems += check_against_teacher(space, config)
    lines = [_with_origin(f"{shown}: {loc}: {message}", loc, origins) for loc, message in problems]
    lines += [_with_origin(f"{shown}: {line}", "teacher.model", origins) for line in teacher_problems]
    if override_problems or lines:
        raise SpecError(override_problems + lines)
    return spec


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


def default_direction(metric: str) -> str:
    """``max`` for quality and task scores, ``min`` for sizes and latency."""
    return _METRIC_DIRECTIONS.get(metric, "max")
