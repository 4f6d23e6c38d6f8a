"""Settings of every pipeline stage and of evaluation, with the paper's values as defaults.

These are plain frozen dataclasses so that the pipeline runs where only torch and transformers are
installed (a GPU benchmark machine). The search's Pydantic spec (`search.spec`) uses them directly as
field types: each class carries ``__pydantic_config__`` (a plain dict, no pydantic import), so unknown
keys are rejected and values are type-checked exactly like the rest of the spec, and every default
lives here, once.

Paper values: Gurgurov et al. 2025 (see the project's method notes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from pipeline.errors import UsageError

__all__ = [
    "STAGES",
    "ConfigError",
    "TASKS",
    "AdaptConfig",
    "Candidate",
    "CorpusSource",
    "DistillConfig",
    "EvalConfig",
    "LatencyConfig",
    "PruneConfig",
    "ScratchConfig",
    "SignalConfig",
    "TaskSource",
    "TaskTraining",
    "TrimVocabConfig",
    "TruncateConfig",
]

# Pydantic reads this attribute on stdlib dataclasses; a plain dict keeps pydantic optional here.
_STRICT = {"extra": "forbid"}


class ConfigError(UsageError, ValueError):
    """A stage setting out of range. A `UsageError` on the command line (one line, exit 2); a
    ``ValueError``, so a spec's validation reports it under the section's name with every other problem."""


def _require(config, *, at_least: dict[str, float] | None = None, positive: tuple[str, ...] = (),
             fraction: tuple[str, ...] = ()) -> None:
    """Raise `ConfigError` for the first field of ``config`` outside its range (None passes)."""
    for name, minimum in (at_least or {}).items():
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
    for name in fraction:
        if not 0 <= getattr(config, name) <= 1:
            raise ConfigError(f"{name} must be between 0 and 1, got {getattr(config, name)}")

STAGES = ("distill", "prune", "truncate", "trim_vocab")
TASKS = ("sentiment", "topic", "ner", "pos")

InitStrategy = Literal["stride", "last_k", "first_k", "first_last_k", "random"]
Runtime = Literal["torch", "onnx", "onnx-int8"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)


@dataclass(frozen=True)
class AdaptConfig:
    """Stage 0: continued masked-LM training of the teacher on target-language text."""

    __pydantic_config__ = _STRICT

    enabled: bool = True
    steps: int = 100_000
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 512
    mlm_probability: float = 0.15
    weight_decay: float = 0.0
    warmup_steps: int = 0
    eval_every: int = 1_000
    seed: int = 0
    bf16: bool = True
    pack: bool = False  # rows of max_length tokens cut from the joined text: no padding, nothing truncated

    def __post_init__(self):
        _require(self, at_least={"steps": 0, "batch_size": 1, "max_length": 4, "warmup_steps": 0, "eval_every": 1},
                 positive=("lr",), fraction=("mlm_probability",))


@dataclass(frozen=True)
class ScratchConfig:
    """A teacher built from scratch: a tokenizer of ``vocab_size`` pieces trained on the corpus and a
    randomly initialised model of this shape, pretrained with the stage-0 settings (`AdaptConfig`).

    For languages and machines where no pretrained teacher is at hand; also the from-scratch
    baseline every compression result should beat. The defaults fit a CPU in minutes.
    """

    __pydantic_config__ = _STRICT

    family: Literal["xlmr", "bert"] = "xlmr"
    vocab_size: int = 8_000
    num_hidden_layers: int = 4
    hidden_size: int = 256
    num_attention_heads: int = 4
    intermediate_size: int = 1_024
    max_length: int = 128

    def __post_init__(self):
        _require(self, at_least={"vocab_size": 16, "num_hidden_layers": 1, "hidden_size": 4, "num_attention_heads": 1,
                                 "intermediate_size": 1, "max_length": 4})


@dataclass(frozen=True)
class DistillConfig:
    """Stages 1 and 3b: ``alpha * MLM + (1 - alpha) * KD`` with a copy-initialised student.

    ``steps`` wins over ``epochs`` when set. ``kd_loss="mse"`` is the logit MSE of the paper; with
    ``mask_padding=False`` padding positions count too, as in the reference scripts. ``kd_loss="kl"``
    is ``KL(softmax(t/T) || softmax(s/T)) * T^2``. ``heldout_rows``: the held-out rows each evaluation
    (every ``eval_every`` steps) scores, the same first rows every time; ``None`` scores every row. An
    evaluation runs teacher and student forward: at the defaults (batch 8, 512 tokens, an evaluation
    every 500 steps) the 256 rows cost 3-4% of a distillation of XLM-R base on the paper's path
    (`pipeline.flops.heldout_share`), where scoring all 2,000 held-out documents cost 21-24%.
    """

    __pydantic_config__ = _STRICT

    alpha: float = 0.5
    kd_loss: Literal["mse", "kl"] = "mse"
    temperature: float = 1.0
    mask_padding: bool = True
    lr: float = 5e-5
    batch_size: int = 8
    grad_accum: int = 1
    steps: int | None = None
    epochs: float = 10.0
    max_length: int = 512
    mlm_probability: float = 0.15
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    eval_every: int = 500
    seed: int = 0
    bf16: bool = True
    pack: bool = False  # rows of max_length tokens cut from the joined text: no padding, nothing truncated
    heldout_rows: int | None = 256

    def __post_init__(self):
        _require(self, at_least={"steps": 0, "batch_size": 1, "grad_accum": 1, "max_length": 4, "warmup_steps": 0,
                                 "eval_every": 1, "grad_clip": 0, "weight_decay": 0, "heldout_rows": 1},
                 positive=("lr", "epochs", "temperature"), fraction=("alpha", "mlm_probability"))


@dataclass(frozen=True)
class PruneConfig:
    """Stage 2: first-order Taylor importance of FFN neurons from one pass over held-out text."""

    __pydantic_config__ = _STRICT

    method: Literal["taylor"] = "taylor"
    reorder_heads: bool = True
    batch_size: int = 8
    max_length: int = 512
    max_batches: int | None = None
    seed: int = 0
    bf16: bool = True  # bf16 autocast of the importance pass (on CUDA only)

    def __post_init__(self):
        _require(self, at_least={"batch_size": 1, "max_length": 4, "max_batches": 1})


@dataclass(frozen=True)
class TruncateConfig:
    """Stage 3: hidden-size truncation, then a second distillation from ``teacher``."""

    __pydantic_config__ = _STRICT

    method: Literal["first", "svd"] = "first"
    teacher: Literal["pruned", "original"] = "pruned"
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass(frozen=True)
class TrimVocabConfig:
    """Stage 4: keep the most frequent pieces of the target language plus every special token.

    ``vocab_size`` of a candidate is the size of the resulting vocabulary, special tokens included;
    it is smaller when fewer pieces reach ``min_count``.
    """

    __pydantic_config__ = _STRICT

    min_count: int = 2
    counting: Literal["frequency", "document"] = "frequency"

    def __post_init__(self):
        _require(self, at_least={"min_count": 1})


@dataclass(frozen=True)
class TaskTraining:
    """How one downstream task trains its adapter (or the whole model) and picks its epoch."""

    __pydantic_config__ = _STRICT

    lr: float = 1e-4
    epochs: int = 20
    batch_size: int = 16
    max_length: int = 256
    reduction_factor: int = 16
    select: Literal["last", "best_dev"] = "last"
    # None: EvalConfig.method; a task may differ (adapters learn some tasks at a given size, not others)
    method: Literal["adapter", "finetune"] | None = None
    # classification: the text vector is the first token's (the paper's) or the mean of the tokens
    pooling: Literal["first", "mean"] = "first"
    # Caps for quick runs (tests, a low-fidelity search): the first N train / dev and test examples.
    max_train_examples: int | None = None
    max_eval_examples: int | None = None

    def __post_init__(self):
        _require(self, at_least={"epochs": 1, "batch_size": 1, "max_length": 4, "reduction_factor": 1,
                                 "max_train_examples": 1, "max_eval_examples": 1}, positive=("lr",))


@dataclass(frozen=True)
class EvalConfig:
    """Downstream evaluation: frozen encoder + bottleneck adapter (paper) or full fine-tuning."""

    __pydantic_config__ = _STRICT

    method: Literal["adapter", "finetune"] = "adapter"
    seeds: tuple[int, ...] = (1, 2, 3)
    scoring: Literal["word", "subword"] = "word"
    sentiment: TaskTraining = field(default_factory=TaskTraining)
    topic: TaskTraining = field(default_factory=lambda: TaskTraining(reduction_factor=4))
    ner: TaskTraining = field(
        default_factory=lambda: TaskTraining(lr=3e-4, epochs=100, batch_size=64, select="best_dev")
    )
    pos: TaskTraining = field(
        default_factory=lambda: TaskTraining(lr=3e-4, epochs=100, batch_size=64, select="best_dev")
    )

    def __post_init__(self):
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")


@dataclass(frozen=True)
class SignalConfig:
    """How the cheap signals of `pipeline.signals` measure a student.

    Held-out losses: the first ``heldout_lines`` held-out lines (None: all) in rows of ``max_length``
    tokens (``pack``: cut from the joined text, as pretraining and distillation read it), masked once
    with ``seed``, so every student is scored on the very same positions. Linear probes: logistic
    regression with inverse regularisation ``probe_c`` on the frozen encoder's last hidden states
    (classification: the mean over a text's tokens; token tasks: each word's first subword), trained
    on at most ``probe_max_train`` training examples of each task and scored on its dev split.
    """

    __pydantic_config__ = _STRICT

    heldout_lines: int | None = 1000
    batch_size: int = 32
    max_length: int = 64
    pack: bool = True
    mlm_probability: float = 0.15
    seed: int = 0
    probe_max_train: int | None = None
    probe_max_length: int = 128
    probe_c: float = 1.0

    def __post_init__(self):
        _require(self, at_least={"heldout_lines": 1, "batch_size": 1, "max_length": 4, "probe_max_train": 1,
                                 "probe_max_length": 4}, positive=("probe_c",), fraction=("mlm_probability",))


@dataclass(frozen=True)
class CorpusSource:
    """Unlabelled text: a UTF-8 file (one sentence or document a line), a folder of them, or a hub
    dataset ``hf:org/name[:config]`` with ``text_column``.

    ``skip_lines`` then ``max_lines`` cut a window out of it (the first ``skip_lines`` lines are left
    out), so held-out text can be the head of a corpus whose training part skips it. Hub sources:
    ``revision``, ``data_dir`` and ``data_files`` address data-file datasets exactly (e.g. the parquet
    export of a script repo: ``revision: refs/convert/parquet``, ``data_dir: <config>``);
    ``streaming`` (default: on when ``max_lines`` is set) reads the first lines without downloading
    and preparing the whole dataset.
    """

    __pydantic_config__ = _STRICT

    source: str
    format: Literal["auto", "text", "parseme", "jsonl", "csv", "tsv", "hf"] = "auto"
    text_column: str = "text"
    split: str = "train"
    max_lines: int | None = None
    skip_lines: int = 0
    revision: str | None = None
    data_dir: str | None = None
    data_files: str | tuple[str, ...] | dict[str, str] | None = None
    streaming: bool | None = None


@dataclass(frozen=True)
class TaskSource:
    """Labelled data of one task: ``hf:org/name[:config]`` or a folder with train/dev/test files.

    Columns are names or 0-based indices given as strings; ``None`` means the format's default
    (classification: ``text``/``label`` or the last two columns; token tasks: first and last column).
    Hub sources: ``revision``, ``data_dir`` and ``data_files`` as for `CorpusSource` (``data_files``
    may map split names to files).
    """

    __pydantic_config__ = _STRICT

    source: str
    format: Literal["auto", "conllu", "conll", "csv", "tsv", "jsonl", "hf"] = "auto"
    text_column: str | None = None
    label_column: str | None = None
    token_column: str | None = None
    tag_column: str | None = None
    header: bool | None = None
    revision: str | None = None
    data_dir: str | None = None
    data_files: str | tuple[str, ...] | dict[str, str] | None = None


@dataclass(frozen=True)
class Candidate:
    """One student of the search space. ``vocab_size=None`` keeps the full vocabulary."""

    __pydantic_config__ = _STRICT

    num_hidden_layers: int
    intermediate_size: int
    hidden_size: int
    vocab_size: int | None = None
    init: InitStrategy = "stride"


@dataclass(frozen=True)
class LatencyConfig:
    """How latency is measured: the median of ``repeats`` timed forward passes of the encoder (input ids
    and attention mask to the last hidden state) after ``warmup`` untimed ones.

    ``runtime``: ``torch`` (PyTorch eager), ``onnx`` (ONNX Runtime, fp32 graph from ``torch.onnx``) or
    ``onnx-int8`` (ONNX Runtime, dynamically quantized int8 weights); the ONNX runtimes run on the CPU.
    ``threads``: intra-op threads of the runtime. One thread at batch 1 and 128 tokens is the setting of
    the measurements that motivated it (issue 10) and stays comparable whatever else runs on the machine.
    """

    __pydantic_config__ = _STRICT

    runtime: Runtime = "torch"
    batch: int = 1
    seq_len: int = 128
    threads: int = 1
    repeats: int = 20
    warmup: int = 3

    def __post_init__(self) -> None:
        for name in ("batch", "seq_len", "threads", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be at least 0, got {self.warmup}")
