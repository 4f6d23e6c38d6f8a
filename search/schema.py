"""The search spec as data: frozen Pydantic models of the YAML file, with every default resolved.

Every default of the service lives here or, for the stage settings, in `pipeline.config` (whose
dataclasses are used as field types directly). Validation resolves every path and default once: a
`Spec` holds absolute paths (Ray workers run in another working directory), the final tracking URI,
artifact location, experiment, registered-model name, storage and cache folders, and nothing
downstream re-derives them. A spec never touches weights, data, Ray or MLflow.

Paths. A relative local path resolves against the folder of the spec file (the validation context's
``base_dir``; `search.spec.load_spec` sets it), and ``~`` expands. ``hf:...`` and ``synthetic:...``
URIs and Hugging Face model ids (``org/name``) pass through unchanged. ``teacher.model`` is a local
path when it starts with ``.``, ``/`` or ``~`` or names something that exists beside the spec;
otherwise it is a hub id (an ``hf:`` prefix is dropped). Data sources that are not
``hf:``/``synthetic:`` URIs are paths.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    Strict,
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
    LatencyConfig,
    PruneConfig,
    ScratchConfig,
    SignalConfig,
    TaskSource,
    TrimVocabConfig,
    TruncateConfig,
)

__all__ = [
    "BUILTIN_METRICS",
    "REPO_ROOT",
    "SYNTHETIC_DIR_ENV",
    "Constraints",
    "Data",
    "Fidelity",
    "RungEvaluation",
    "Screen",
    "ExportSettings",
    "MlflowSettings",
    "Objective",
    "RaySettings",
    "Resources",
    "SearchSettings",
    "Space",
    "Spec",
    "Stages",
    "Teacher",
    "TEACHER_LICENSES",
    "default_direction",
    "default_home",
    "in_ray_package",
    "resolve_data_path",
    "resolve_model_path",
    "slug",
]

# The checkout this package runs from: default home of the MLflow store and the caches.
REPO_ROOT = Path(__file__).resolve().parents[1]


def default_home(code_root: Path | None = None) -> Path:
    """Where the default MLflow store and caches live: the checkout, or ``~/.lrl-compress`` when the code
    runs from a Ray job's unpacked package (``ray job submit --working-dir .``). That folder is removed
    after the job and lies at a different path on every node, so nothing kept or shared may default into it.
    """
    code_root = REPO_ROOT if code_root is None else code_root
    if in_ray_package(code_root):
        return Path("~/.lrl-compress").expanduser()
    return code_root


def in_ray_package(path: Path) -> bool:
    """Whether ``path`` lies in a package Ray unpacked (a job's ``--working-dir``)."""
    return "runtime_resources" in path.parts or any(part.startswith("_ray_pkg_") for part in path.parts)


# Overrides the default folder of synthetic languages (tests share one build per checkout).
SYNTHETIC_DIR_ENV = "LRL_SYNTHETIC_ROOT"

BUILTIN_METRICS = ("quality", "params", "latency_ms", "disk_mb")
# measured on the model itself; every other metric is a score on the tasks (a cheap signal stands in for those)
MODEL_METRICS = ("params", "latency_ms", "disk_mb")

# Licenses of well-known teachers (their model cards): a student is a derivative of its teacher's
# weights, so by default it carries the teacher's license. Any other teacher defaults to "other",
# Hugging Face's value for "the card says"; the spec's ``license`` overrides both (the data a student
# was distilled and evaluated on may add terms of its own).
TEACHER_LICENSES = {
    "FacebookAI/xlm-roberta-base": "mit", "xlm-roberta-base": "mit",
    "FacebookAI/xlm-roberta-large": "mit", "xlm-roberta-large": "mit",
    "google-bert/bert-base-multilingual-cased": "apache-2.0", "bert-base-multilingual-cased": "apache-2.0",
}
_METRIC_DIRECTIONS = {"quality": "max", "params": "min", "latency_ms": "min", "disk_mb": "min"}


def default_direction(metric: str) -> str:
    """``max`` for quality and task scores, ``min`` for sizes and latency."""
    return _METRIC_DIRECTIONS.get(metric, "max")


def slug(text: str) -> str:
    """``text`` reduced to the characters that names of runs, folders and models accept."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "search"


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
    Or ``build``: no pretrained model, a teacher trained from scratch on ``data.corpus`` (its
    tokenizer too) with the ``adapt`` settings; exactly one of the two.

    Safe by default: a teacher whose folder asks to run its own code (``auto_map``) is refused unless
    ``trust_remote_code`` (then a warning), and one whose weights are only pickled (``pytorch_model.bin``)
    unless ``allow_pickle``. Either opt-in reads the teacher once and keeps a safetensors copy in the stage
    cache, so every later stage loads plain safetensors.
    """

    model: str | None = Field(default=None, min_length=1)
    build: ScratchConfig | None = None
    adapt: AdaptConfig = AdaptConfig()
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @field_validator("model")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else resolve_model_path(value, _base_dir(info))

    @model_validator(mode="after")
    def _one_teacher(self) -> Teacher:
        if (self.model is None) == (self.build is None):
            raise ValueError("give either teacher.model (a pretrained teacher) or teacher.build (one trained "
                             "from scratch on data.corpus)")
        if self.build is not None and not self.adapt.enabled:
            raise ValueError("teacher.build is trained with the teacher.adapt settings: adapt.enabled cannot be false")
        return self

    @property
    def label(self) -> str:
        """How reports name the teacher: its model, or what it is built as."""
        if self.model is not None:
            return self.model
        b = self.build
        return (f"built from scratch ({b.family}, {b.num_hidden_layers} layers, hidden {b.hidden_size}, "
                f"vocabulary {b.vocab_size:,})")


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


class RungEvaluation(_Section):
    """A cheaper evaluation for the rungs below the top one, where it only ranks trials for promotion.

    Each field caps the spec's ``evaluation`` (None: as there): ``seeds`` keeps its first N seeds,
    ``epochs`` caps every task's epochs, ``max_train_examples`` every task's training examples. The
    top rung always evaluates in full; when the trials are done, the front's members that stopped at
    a lower rung are scored again in full (`search.book.TrialBook.rescore_front`), and trials off the
    front keep their cheaper scores (their ``rung`` tag says so).
    """

    seeds: PositiveInt | None = None
    epochs: PositiveInt | None = None
    max_train_examples: PositiveInt | None = None

    def apply(self, evaluation: EvalConfig) -> EvalConfig:
        """``evaluation`` with these caps."""

        def cap(value: int | None, limit: int | None) -> int | None:
            if limit is None:
                return value
            return limit if value is None else min(limit, value)

        tasks = {}
        for name in TASKS:
            task = getattr(evaluation, name)
            tasks[name] = dataclasses.replace(task, epochs=cap(task.epochs, self.epochs),
                                              max_train_examples=cap(task.max_train_examples, self.max_train_examples))
        return dataclasses.replace(evaluation, seeds=evaluation.seeds[: self.seeds] if self.seeds else evaluation.seeds,
                                   **tasks)


# The cheap scoring both screening and multi-fidelity default to: the evaluation capped (the Maltese
# table's rung evaluation, benchmarks/RESULTS.md), and how held-out losses and probes are taken.
CHEAP_EVALUATION = RungEvaluation(seeds=1, epochs=2, max_train_examples=300)
SIGNAL_SETTINGS = SignalConfig(heldout_lines=1000, probe_max_train=300)


class Fidelity(_Section):
    """Multi-objective successive halving over distillation steps (see `search.tuner`).

    Every trial first trains its last distillation for ``min_steps`` of a ``max_steps`` schedule. That
    is the last distillation's only schedule: ``truncate.distill.steps`` follows ``max_steps`` when left
    out and may not differ from it, nor may ``distill.steps`` where a candidate's last distillation is
    the depth one (`search.spec`). At each rung (``min_steps`` times powers of ``reduction_factor``
    while one is at most ``max_steps / reduction_factor``, then ``max_steps``) only the best
    ``1 / reduction_factor`` of the trials that reached it, by non-dominated rank and crowding
    distance, continue from where they stopped. ``rung_zero`` adds a first rung at 0 steps: the
    student after its training-free stages (prune, truncate, trim), before its last distillation trains.

    ``signal`` ranks the trials at the rungs below the top one, which is always scored in full
    (`pipeline.signals`): ``probe``, linear probes on frozen features (mean dev score; the default, the
    best halving signal on dev in the Maltese table's replay, benchmarks/RESULTS.md; ``mlm`` for a spec
    without tasks); ``mlm``, the masked-LM loss on held-out text (lower is better); ``capped``, the
    evaluation with the caps of ``rung_evaluation`` (default: one seed, 2 epochs, 300 training
    examples a task; giving ``rung_evaluation`` alone means ``capped``); ``full``, the full evaluation
    at every rung. ``settings``: how held-out losses and probes are taken. Trials are compared only
    with others at the same rung, so a cheap signal ranks them fairly. When the trials are done, the
    front's members that stopped below the top rung with ``capped`` scores are scored again in full;
    under ``probe`` or ``mlm`` a trial that stopped has no quality and stays off the front (its signal
    is in its record).
    """

    min_steps: PositiveInt
    max_steps: PositiveInt
    reduction_factor: int = 3
    rung_zero: bool = False
    signal: Literal["probe", "mlm", "capped", "full"] | None = None  # None: final when the spec loads
    rung_evaluation: RungEvaluation | None = None
    settings: SignalConfig = SIGNAL_SETTINGS

    @model_validator(mode="before")
    @classmethod
    def _one_scoring(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        signal, caps = data.get("signal"), data.get("rung_evaluation")
        if signal is None and caps is not None:
            return {**data, "signal": "capped"}
        if signal == "capped" and caps is None:
            return {**data, "rung_evaluation": CHEAP_EVALUATION}
        if signal is not None and signal != "capped" and caps is not None:
            raise ValueError(f"rung_evaluation caps the evaluation of signal capped, and signal is {signal}: "
                             "leave rung_evaluation out or set signal: capped")
        return data


class Screen(_Section):
    """Screening: rank every candidate of the space by a cheap signal before any is trained in full.

    Before the first trial, every candidate within ``constraints.max_params`` is built to rung 0 of its
    last distillation (its training-free stages done, nothing distilled into its final shape; the
    earlier stages, such as the depth distillation, are built and shared as always) and scored with
    ``signal``. The trials then run best first by non-dominated rank of the signal and the parameter
    count (`search.pareto.rank`), so ``num_samples`` or the time budget stop the search after the most
    promising candidates. ``signal`` (`pipeline.signals`): ``capped``, the evaluation with the caps of
    ``evaluation``, mean dev score (the default: the best ranker in the Maltese table's replay,
    benchmarks/RESULTS.md); ``probe``, linear probes on frozen features; ``mlm``, the masked-LM loss on
    held-out text. ``settings``: how held-out losses and probes are taken.
    """

    signal: Literal["capped", "probe", "mlm"] = "capped"
    evaluation: RungEvaluation = CHEAP_EVALUATION
    settings: SignalConfig = SIGNAL_SETTINGS


class SearchSettings(_Section):
    """The sampler and how many trials run, where, and with which budget.

    ``max_failures``: retries of a crashed trial (Ray's ``FailureConfig.max_failures``); a trial
    whose training diverges is recorded as failed either way. Folders, made absolute:
    ``storage_path`` (Ray's experiment state, default ``<repo>/.cache/ray``), ``cache_dir`` (stage
    outputs shared by trials, default ``<repo>/.cache/stages``) and ``synthetic_dir`` (where
    ``synthetic:`` languages and their teachers are built once, default ``$LRL_SYNTHETIC_ROOT`` or
    ``<repo>/.cache/synthetic``); ``<repo>`` is `default_home`. On a multi-node cluster all three must
    be on storage every node sees (`search.folders` checks this before any trial).
    ``fidelity``: multi-fidelity over distillation steps (None: every trial trains in full).
    ``screen``: rank every candidate by a cheap signal first and run the trials best first (None: the
    sampler proposes from the start).
    ``time_budget_s``: wall seconds for the whole search; no trial starts that would not fit, running
    ones finish (None: no limit).
    """

    sampler: Literal["nsga2", "tpe"] = "nsga2"
    num_samples: PositiveInt = 20
    max_concurrent: PositiveInt = 1
    resources: Resources = Resources()
    seed: int = 0
    max_failures: int = Field(default=0, ge=0)
    storage_path: str | None = Field(default=None, validate_default=True)
    cache_dir: str | None = Field(default=None, validate_default=True)
    synthetic_dir: str | None = Field(default=None, validate_default=True)
    fidelity: Fidelity | None = None
    screen: Screen | None = None
    time_budget_s: float | None = None

    @field_validator("storage_path", "cache_dir", "synthetic_dir")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str:
        if value is None:
            if info.field_name == "synthetic_dir" and os.environ.get(SYNTHETIC_DIR_ENV):
                return str(Path(os.environ[SYNTHETIC_DIR_ENV]).expanduser().resolve())
            sub = {"storage_path": "ray", "cache_dir": "stages", "synthetic_dir": "synthetic"}[info.field_name]
            return str(default_home() / ".cache" / sub)
        if "://" in value:
            raise ValueError(f"{value}: remote storage URIs are not supported yet; use a folder every node sees "
                             "(a shared filesystem)")
        return _local_path(value, _base_dir(info))


class RaySettings(_Section):
    """``address``: ``local`` starts a private Ray for the run; ``auto`` joins the cluster of this
    node; ``HOST:PORT`` or ``ray://HOST:10001`` names one."""

    address: str = Field(default="local", min_length=1)


class MlflowSettings(_Section):
    """Tracking. ``tracking_uri`` defaults to ``sqlite:///<repo>/mlflow/mlflow.db``; a relative
    SQLite path resolves against the spec's folder. ``artifact_location`` defaults to the folder
    ``artifacts`` beside a SQLite database (else the server's default). ``experiment`` defaults to
    ``compress-<language>`` and ``registered_model`` (the registry name of the Pareto students) to
    ``<experiment>-student``."""

    tracking_uri: str | None = Field(default=None, validate_default=True)
    artifact_location: str | None = Field(default=None, validate_default=True)
    experiment: str | None = None
    registered_model: str | None = None

    @field_validator("tracking_uri")
    @classmethod
    def _resolve_uri(cls, value: str | None, info: ValidationInfo) -> str:
        if value is None:
            return f"sqlite:///{default_home() / 'mlflow' / 'mlflow.db'}"
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


class ExportSettings(_Section):
    """Export one registered student when the search ends, as ``python -m search.export`` would.

    ``alias``: a registry alias of the search (``best-<objective>`` or ``pareto-<k>``); ``onnx`` and
    ``int8``: also write ``model.onnx`` / ``model.int8.onnx`` (``int8`` implies ``onnx``); ``out``: the
    folder, replaced on every run (default ``<repo>/exports/<registered model>-<alias>``).
    """

    alias: str = Field(default="best-quality", min_length=1)
    onnx: bool = True
    int8: bool = True
    out: str | None = None

    @field_validator("out")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _local_path(value, _base_dir(info))


class Spec(_Section):
    """A compression search: teacher, language and data, stage settings, space, objectives,
    constraints, latency, search, Ray, MLflow and export settings.

    ``license`` (the students' model cards) defaults to the teacher's license for the teachers of
    `TEACHER_LICENSES`, else ``other``. ``latency``: how every trial's and the teacher's latency is
    measured (always measured and logged; ``latency_ms`` objectives and ``constraints.max_latency_ms``
    use it). ``export``: a student to export when the search ends (none by default).
    """

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
    latency: LatencyConfig = LatencyConfig()
    # factories: these defaults are paths, resolved when a spec loads, not when this module is imported
    search: SearchSettings = Field(default_factory=SearchSettings)
    ray: RaySettings = RaySettings()
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    export: ExportSettings | None = None
    license: str | None = Field(default=None, min_length=1)
    # the teacher's config.json, read once (`search.spec.teacher_config`) and carried with the spec:
    # (the teacher it was read for, the config)
    _teacher_config: tuple[Any, dict[str, Any]] | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        """Specs are equal when their fields are: whether the teacher's config was read yet does not count."""
        return type(other) is type(self) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # as for any model with list or dict fields

    @model_validator(mode="after")
    def _final_names(self) -> Spec:
        """The defaults that depend on other fields: the license from the teacher, the export folder, and
        under ``search.fidelity`` the steps of the truncation's distillation (``fidelity.max_steps``: the
        rungs share out that one schedule) and the signal (``probe``, or ``mlm`` without tasks) when the
        spec leaves them out."""
        updates: dict[str, Any] = {}
        fidelity = self.search.fidelity
        if fidelity is not None and fidelity.signal is None:
            fidelity = fidelity.model_copy(update={"signal": "probe" if self.data.tasks else "mlm"})
            updates["search"] = self.search.model_copy(update={"fidelity": fidelity})
        if fidelity is not None and self.truncate.distill.steps is None:
            updates["truncate"] = dataclasses.replace(
                self.truncate, distill=dataclasses.replace(self.truncate.distill, steps=fidelity.max_steps))
        if self.license is None:
            updates["license"] = TEACHER_LICENSES.get(self.teacher.model, "other")
        if self.export is not None and self.export.out is None and self.mlflow.registered_model:
            out = REPO_ROOT / "exports" / slug(f"{self.mlflow.registered_model}-{self.export.alias}")
            updates["export"] = self.export.model_copy(update={"out": str(out)})
        for name, value in updates.items():
            object.__setattr__(self, name, value)  # frozen: set once here, while validating
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_names(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("language"), str):
            return data
        section = data.get("mlflow")
        if section is None:
            section = {}
        if not isinstance(section, dict):
            return data
        experiment = section.get("experiment")
        if experiment is None:
            experiment = f"compress-{data['language']}"
        registered = section.get("registered_model")
        if registered is None and isinstance(experiment, str):
            registered = f"{slug(experiment)}-student"
        return {**data, "mlflow": {**section, "experiment": experiment, "registered_model": registered}}

    @property
    def study_storage(self) -> str:
        """The Optuna study's SQLite URL: ``optuna.db`` beside a SQLite MLflow store, else in
        ``search.storage_path``."""
        uri = self.mlflow.tracking_uri
        folder = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else Path(self.search.storage_path)
        return f"sqlite:///{folder / 'optuna.db'}"



