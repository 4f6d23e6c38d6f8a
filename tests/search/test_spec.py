"""The spec schema: paper defaults, path resolution, overrides, and one-line errors for every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest
import yaml

from search.schema import REPO_ROOT, Spec
from search.spec import SpecError, apply_overrides, load_spec

XLMR_BASE = {
    "model_type": "xlm-roberta", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "vocab_size": 250002, "max_position_embeddings": 514, "type_vocab_size": 1,
}
MBERT = {
    "model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "vocab_size": 119547, "max_position_embeddings": 512, "type_vocab_size": 2,
}


def write_teacher(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def minimal(**sections) -> dict:
    data = {
        "language": "mt",
        "teacher": {"model": "./teacher"},
        "data": {"corpus": {"source": "corpus.txt"}, "heldout": {"source": "heldout.txt"},
                 "tasks": {"pos": {"source": "pos"}}},
    }
    data.update(sections)
    return data


def write_spec(folder: Path, data: dict, name: str = "spec.yaml", teacher: dict | None = XLMR_BASE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if teacher is not None:
        write_teacher(folder / "teacher", teacher)
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def problems(path, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return list(info.value.problems)


# ---------------------------------------------------------------------------- defaults and paths
def test_defaults_are_the_papers(tmp_path):
    spec = load_spec(write_spec(tmp_path, minimal()))
    assert spec.space.layers == (6,) and spec.space.ffn == (2048,)
    assert spec.space.hidden == (564, 456, 312) and spec.space.vocab == (40000,) and spec.space.init == ("stride",)
    assert [(o.metric, o.direction) for o in spec.objectives] == [("quality", "max"), ("params", "min")]
    assert spec.stages.order == ("distill", "prune", "truncate", "trim_vocab")
    assert spec.distill.alpha == 0.5 and spec.distill.kd_loss == "mse" and spec.distill.lr == 5e-5
    assert spec.evaluation.topic.reduction_factor == 4 and spec.evaluation.seeds == (1, 2, 3)
    assert spec.search.sampler == "nsga2" and spec.search.max_failures == 0
    assert spec.search.resources.cpu == 1 and spec.search.resources.gpu == 0
    assert spec.ray.address == "local"
    assert spec.constraints.max_params is None
    assert spec.mlflow.tracking_uri == f"sqlite:///{REPO_ROOT}/mlflow/mlflow.db"
    assert spec.mlflow.artifact_location == (REPO_ROOT / "mlflow" / "artifacts").as_uri()
    assert spec.mlflow.experiment == "compress-mt"
    assert spec.search.storage_path == str(REPO_ROOT / ".cache" / "ray")
    assert spec.search.cache_dir == str(REPO_ROOT / ".cache" / "stages")
    assert spec.latency.runtime == "torch" and (spec.latency.batch, spec.latency.seq_len, spec.latency.threads) == (1, 128, 1)
    assert spec.license == "other" and spec.export is None


def test_partial_section_keeps_the_other_defaults(tmp_path):
    data = minimal(evaluation={"topic": {"lr": "1e-4"}}, truncate={"distill": {"steps": 10}})
    spec = load_spec(write_spec(tmp_path, data))
    assert spec.evaluation.topic.lr == 1e-4
    assert spec.evaluation.topic.reduction_factor == 4  # topic's own default, not TaskTraining's 16
    assert spec.evaluation.ner.epochs == 100
    assert spec.truncate.distill.steps == 10 and spec.truncate.teacher == "pruned"


def test_spec_is_frozen_and_round_trips(tmp_path):
    spec = load_spec(write_spec(tmp_path, minimal()))
    with pytest.raises(pydantic.ValidationError):
        spec.language = "sk"
    with pytest.raises(Exception):
        spec.distill.lr = 1.0
    assert Spec.model_validate(spec.model_dump()) == spec
    assert Spec.model_validate(json.loads(spec.model_dump_json())) == spec


def test_relative_paths_resolve_against_the_spec_folder(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    data = minimal(search={"cache_dir": "../cache", "storage_path": "ray", "synthetic_dir": "~/synth"},
                   mlflow={"tracking_uri": "sqlite:///track/m.db"})
    data["data"]["tasks"] = {"pos": {"source": "data/pos"}, "ner": {"source": "hf:unimelb-nlp/wikiann:mt"},
                             "topic": {"source": "synthetic:demo/topic"}, "sentiment": {"source": "~/sa"}}
    path = write_spec(folder, data)
    monkeypatch.chdir(tmp_path)
    spec = load_spec(path)
    assert spec.teacher.model == str(folder / "teacher")
    assert spec.data.corpus.source == str(folder / "corpus.txt")
    assert spec.data.tasks["pos"].source == str(folder / "data" / "pos")
    assert spec.data.tasks["ner"].source == "hf:unimelb-nlp/wikiann:mt"
    assert spec.data.tasks["topic"].source == "synthetic:demo/topic"
    assert spec.data.tasks["sentiment"].source == str(Path("~/sa").expanduser())
    assert spec.search.cache_dir == str(tmp_path / "cache")
    assert spec.search.storage_path == str(folder / "ray")
    assert spec.search.synthetic_dir == str(Path("~/synth").expanduser())
    assert spec.mlflow.tracking_uri == f"sqlite:///{folder}/track/m.db"
    assert spec.mlflow.artifact_location == (folder / "track" / "artifacts").as_uri()


def test_remote_storage_is_refused_when_the_spec_loads(tmp_path):
    path = write_spec(tmp_path, minimal(search={"storage_path": "s3://bucket/ray"}))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == (f"{path}: search.storage_path: s3://bucket/ray: remote storage URIs are not supported "
                               "yet; use a folder every node sees (a shared filesystem)")


def test_synthetic_dir_default_follows_the_environment(tmp_path, monkeypatch):
    path = write_spec(tmp_path, minimal())
    monkeypatch.delenv("LRL_SYNTHETIC_ROOT", raising=False)
    assert load_spec(path).search.synthetic_dir == str(REPO_ROOT / ".cache" / "synthetic")
    monkeypatch.setenv("LRL_SYNTHETIC_ROOT", str(tmp_path / "synth"))
    assert load_spec(path).search.synthetic_dir == str(tmp_path / "synth")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("FacebookAI/xlm-roberta-base", "FacebookAI/xlm-roberta-base"),
        ("xlm-roberta-base", "xlm-roberta-base"),
        ("hf:google-bert/bert-base-multilingual-cased", "google-bert/bert-base-multilingual-cased"),
        ("synthetic:demo/teacher", "synthetic:demo/teacher"),
        ("./teacher", "{folder}/teacher"),
        ("teacher", "{folder}/teacher"),  # exists beside the spec
        ("/abs/teacher", "/abs/teacher"),
    ],
)
def test_teacher_model_is_a_path_or_a_hub_id(tmp_path, value, expected):
    write_teacher(tmp_path / "teacher", XLMR_BASE)
    spec = Spec.model_validate(minimal(teacher={"model": value}), context={"base_dir": tmp_path})
    assert spec.teacher.model == expected.format(folder=tmp_path)


def test_overridden_paths_are_relative_to_the_current_directory(tmp_path, monkeypatch):
    path = write_spec(tmp_path / "specs", minimal())
    write_teacher(tmp_path / "elsewhere", MBERT)
    monkeypatch.chdir(tmp_path)
    spec = load_spec(path, ["teacher.model=elsewhere", "data.corpus.source=c.txt", "data.tasks.ner={source: n}"])
    assert spec.teacher.model == str(tmp_path / "elsewhere")
    assert spec.data.corpus.source == str(tmp_path / "c.txt")
    assert spec.data.tasks["ner"].source == str(tmp_path / "n")
    assert spec.data.tasks["pos"].source == str(tmp_path / "specs" / "pos")  # from the file: spec folder


# ---------------------------------------------------------------------------- overrides
def test_set_values_are_yaml_and_validated_like_the_file(tmp_path):
    path = write_spec(tmp_path, minimal())
    spec = load_spec(path, ["space.hidden=[312,456]", "space.vocab=[40000, full]", "evaluation.topic.lr=1e-4",
                            "search.resources={cpu: 2, gpu: 0.5}", "constraints.max_params=50000000", "space.layers=4"])
    assert spec.space.hidden == (312, 456) and spec.space.vocab == (40000, "full") and spec.space.layers == (4,)
    assert spec.evaluation.topic.lr == 1e-4 and spec.evaluation.topic.reduction_factor == 4
    assert spec.search.resources.gpu == 0.5 and spec.constraints.max_params == 50_000_000
    lines = problems(path, ["space.hidden=[310]", "search.sampler=random"])
    assert f"{path}: space.hidden[0]: 310 is not divisible by num_attention_heads=12 (from --set space.hidden=[310])" in lines
    assert any(line.startswith(f"{path}: search.sampler: ") and "--set search.sampler=random" in line for line in lines)


def test_apply_overrides_problems():
    raw = {"space": {"layers": [6]}, "language": "mt"}
    found, data, origins = apply_overrides(raw, ["space.layers", "language.code=x", "a.b.c=1", "x=[1", "=3"])
    assert found[0] == "--set space.layers: expected dotted.key=value, e.g. space.hidden=[312,456]"
    assert found[1] == "--set language.code=x: language is not a mapping"
    assert found[2].startswith("--set x=[1: the value is not valid YAML")
    assert found[3].startswith("--set =3: expected dotted.key=value")
    assert data["a"] == {"b": {"c": 1}} and origins == {"a.b.c": "a.b.c=1"}
    assert raw == {"space": {"layers": [6]}, "language": "mt"}  # the input is not changed


# ---------------------------------------------------------------------------- errors
def test_every_problem_is_reported_at_once_one_line_each(tmp_path):
    data = minimal(space={"layers": [6, 13, 6], "ffn": [4096], "hidden": [310, 456], "vocab": [300000, "full"]},
                   search={"sampler": "grid", "num_samples": 0},
                   objectives=[{"metric": "ner", "direction": "max"}, {"metric": "speed", "direction": "min"}])
    data["teacher"]["adapt"] = {"stepz": 3}
    path = write_spec(tmp_path, data)
    lines = problems(path)
    assert all(line.startswith(f"{path}: ") and "\n" not in line for line in lines)
    text = "\n".join(lines)
    assert f"{path}: teacher.adapt.stepz: unknown key; expected one of: enabled, steps, lr" in text
    assert f"{path}: search.sampler: Input should be 'nsga2' or 'tpe' (got 'grid')" in text
    assert f"{path}: search.num_samples: " in text
    # the schema failed, yet the space is still checked against the teacher
    assert f"{path}: space.layers[2]: 6 appears twice" in text
    assert f"{path}: space.layers[1]: 13 is larger than the teacher's num_hidden_layers=12" in text
    assert f"{path}: space.ffn[0]: 4096 is larger than the teacher's intermediate_size=3072" in text
    assert f"{path}: space.hidden[0]: 310 is not divisible by num_attention_heads=12" in text
    assert f"{path}: space.vocab[0]: 300000 is larger than the teacher's vocab_size=250002" in text


def test_semantic_problems_after_a_valid_schema(tmp_path):
    data = minimal(objectives=[{"metric": "ner"}, {"metric": "speed"}, {"metric": "params"}, {"metric": "params"}],
                   stages={"order": ["distill", "prune", "prune"]}, space={"init": []})
    data["data"]["tasks"] = {}
    path = write_spec(tmp_path, data)
    text = "\n".join(problems(path))
    assert "objectives[0].metric: task 'ner' is not in data.tasks (none given)" in text
    assert "objectives[1].metric: unknown metric 'speed'; expected one of quality, params, latency_ms, disk_mb" in text
    assert "objectives[3].metric: 'params' appears twice" in text
    assert "stages.order: must name each of distill, prune, truncate, trim_vocab exactly once" in text
    assert "space.init: needs at least one choice" in text


def test_quality_needs_a_task(tmp_path):
    data = minimal(constraints={"min_quality": 0.5})
    data["data"]["tasks"] = {}
    text = "\n".join(problems(write_spec(tmp_path, data)))
    assert "objectives[0].metric: quality is the mean task score and needs at least one task in data.tasks" in text
    assert "constraints.min_quality: needs at least one task in data.tasks" in text


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"space": {"ffn": []}}, "space.ffn: needs at least one choice"),
        ({"space": {"vocab": [40000, "big"]}}, "space.vocab[1]: expected a positive integer or 'full', got 'big'"),
        ({"space": {"layers": ["six"]}}, "space.layers[0]: Input should be a valid integer (got 'six')"),
        ({"space": {"hidden": [0]}}, "space.hidden[0]: Input should be greater than 0 (got 0)"),
        ({"space": {"init": ["middle"]}}, "space.init[0]: Input should be 'stride', 'last_k'"),
        ({"spaces": {}}, "spaces: unknown key; expected one of: teacher, language, data, stages"),
        ({"data": {"corpus": {"source": "x"}}}, "data.heldout: required field missing"),
        ({"data": {"corpus": {"source": "x"}, "heldout": {"source": "y"}, "tasks": {"qa": {"source": "z"}}}},
         "data.tasks.qa: Input should be 'sentiment', 'topic', 'ner' or 'pos' (got 'qa')"),
        ({"distill": {"kd_loss": "l1"}}, "distill.kd_loss: Input should be 'mse' or 'kl' (got 'l1')"),
        ({"evaluation": {"pos": {"epochs": "many"}}}, "evaluation.pos.epochs: Input should be a valid integer"),
        ({"search": {"resources": {"gpu": -1}}}, "search.resources.gpu: Input should be greater than or equal to 0"),
        ({"ray": "auto"}, "ray: Input should be a valid dictionary or instance of RaySettings (got 'auto')"),
        ({"constraints": {"max_params": -5}}, "constraints.max_params: Input should be greater than 0"),
        ({"latency": {"runtime": "tensorrt"}}, "latency.runtime: Input should be 'torch', 'onnx' or 'onnx-int8'"),
        ({"latency": {"batch": 0}}, "latency: batch must be at least 1, got 0"),
        ({"export": {"alias": "best-latency_ms"}}, "export.alias: 'best-latency_ms' needs the objective 'latency_ms'"),
        ({"export": {"alias": "newest"}}, "export.alias: 'newest' is not an alias the search sets"),
    ],
)
def test_one_line_per_bad_field(tmp_path, section, expected):
    path = write_spec(tmp_path, minimal(**section))
    lines = problems(path)
    assert any(line.startswith(f"{path}: {expected}") for line in lines), lines


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("language: mt\nteacher:\n  model: [x\n  adapt: {}\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}:4:8: ") or line.startswith(f"{path}:4:"), line


def test_missing_file_and_wrong_top_level(tmp_path):
    assert problems(tmp_path / "none.yaml") == [f"{tmp_path / 'none.yaml'}: no such file"]
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert problems(path) == [f"{path}: a spec is a mapping of sections (teacher, language, data, ...), got list"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert any("teacher: required field missing" in line for line in problems(empty))


def test_held_out_window_must_not_overlap_the_training_window(tmp_path):
    def errors(corpus, heldout):
        data = minimal()
        data["data"]["corpus"] = {"source": "hf:c/c", **corpus}
        data["data"]["heldout"] = {"source": "hf:c/c", **heldout}
        try:
            load_spec(write_spec(tmp_path, data))
        except SpecError as error:
            return [line.split(": ", 2)[1] + ": " + line.split(": ", 2)[2] for line in error.problems]
        return []

    assert errors({"skip_lines": 2000}, {"max_lines": 2000}) == []
    assert errors({"max_lines": 5000}, {"skip_lines": 5000, "max_lines": 100}) == []
    (line,) = errors({"skip_lines": 1000}, {"max_lines": 2000})
    assert line == ("data.heldout: lines 0..1999 of hf:c/c are also training text (data.corpus reads lines 1000..end); "
                    "e.g. set data.corpus.skip_lines to 2000 and give data.heldout a max_lines")
    assert errors({}, {"max_lines": 2000, "split": "validation"}) == []  # another split is other text
    assert sorted(errors({"skip_lines": -1}, {"max_lines": 0, "split": "x"})) == [
        "data.corpus.skip_lines: must be 0 or more, got -1", "data.heldout.max_lines: must be at least 1 (or null: all), got 0"]


def test_a_teacher_built_from_scratch_is_sized_before_it_exists(tmp_path, capsys):
    from search.run import main
    from search.spec import teacher_config

    data = minimal(teacher={"build": {"vocab_size": 8000, "num_hidden_layers": 4, "hidden_size": 256},
                            "adapt": {"steps": 100}}, space={"layers": [2], "hidden": [128], "ffn": [512],
                                                             "vocab": [4000, "full"]})
    path = write_spec(tmp_path, data, teacher=None)
    spec = load_spec(path)
    assert spec.teacher.model is None and spec.teacher.build.intermediate_size == 1024  # the default
    config = teacher_config(spec)
    assert config["model_type"] == "xlm-roberta" and config["max_position_embeddings"] == 130
    assert main([str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("teacher built from scratch (xlmr, 4 layers, hidden 256, vocabulary 8,000)")
    both = minimal(teacher={"model": "./teacher", "build": {}})
    with pytest.raises(SpecError, match="teacher: give either teacher.model .* or teacher.build"):
        load_spec(write_spec(tmp_path / "b", both))
    bad = minimal(teacher={"build": {"hidden_size": 250}, "adapt": {"enabled": False}})
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path / "c", bad, teacher=None))
    assert "teacher: teacher.build is trained with the teacher.adapt settings" in str(info.value)
    odd = minimal(teacher={"build": {"hidden_size": 250}})
    with pytest.raises(SpecError, match=r"teacher.build.hidden_size: 250 is not divisible by num_attention_heads=4"):
        load_spec(write_spec(tmp_path / "d", odd, teacher=None))


@pytest.mark.parametrize(("search", "space", "expected"), [
    ({"fidelity": {"min_steps": 500, "max_steps": 100}}, {}, "search.fidelity.min_steps: 500 is above max_steps=100"),
    ({"fidelity": {"min_steps": 10, "max_steps": 100, "reduction_factor": 1}}, {},
     "search.fidelity.reduction_factor: must be at least 2, got 1"),
    ({"time_budget_s": 0}, {}, "search.time_budget_s: must be more than 0 seconds, got 0"),
    ({"time_budget_s": -5}, {}, "search.time_budget_s: must be more than 0 seconds, got -5"),
    ({"fidelity": {"min_steps": 10, "max_steps": 100}}, {"layers": [12], "hidden": [768]},
     "search.fidelity: no candidate of the space distils"),
    ({"fidelity": {"min_steps": 0, "max_steps": 100}}, {}, "search.fidelity.min_steps: Input should be greater than 0"),
    ({"fidelity": {"min_steps": 40, "max_steps": 100}}, {},
     "search.fidelity.min_steps: 40 x reduction_factor 3 is above max_steps=100: no rung below the top"),
    ({"fidelity": {"min_steps": 10, "max_steps": 100}}, {"layers": [6], "hidden": [768]},
     "search.fidelity.max_steps: 100 is not distill.steps=None: candidates of hidden size 768 (the teacher's) end "
     "with the depth distillation"),
])
def test_bad_fidelity_and_budget_name_the_field(tmp_path, search, space, expected):
    path = write_spec(tmp_path, minimal(search=search, **({"space": space} if space else {})))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(f"{path}: {expected}"), info.value.problems


def test_the_last_distillations_steps_follow_fidelity_or_disagree_in_one_line(tmp_path):
    fidelity = {"min_steps": 10, "max_steps": 90}
    spec = load_spec(write_spec(tmp_path / "a", minimal(search={"fidelity": fidelity})))
    assert spec.truncate.distill.steps == 90  # left out: it follows max_steps, final when the spec loads
    path = write_spec(tmp_path / "b", minimal(search={"fidelity": fidelity}, truncate={"distill": {"steps": 200}}))
    (line,) = problems(path)
    assert line.startswith(f"{path}: search.fidelity.max_steps: 90 is not truncate.distill.steps=200"), line
    depth = minimal(search={"fidelity": fidelity}, space={"layers": [6], "hidden": [312, 768]}, distill={"steps": 90})
    assert load_spec(write_spec(tmp_path / "c", depth)).distill.steps == 90


def test_fidelity_defaults(tmp_path):
    from search.schema import CHEAP_EVALUATION, Fidelity

    fidelity = Fidelity(min_steps=100, max_steps=900)
    assert fidelity.reduction_factor == 3 and not fidelity.rung_zero and fidelity.rung_evaluation is None
    assert Fidelity(min_steps=100, max_steps=900, signal="capped").rung_evaluation == CHEAP_EVALUATION
    assert Fidelity(min_steps=100, max_steps=900, signal="full").rung_evaluation is None
    mine = Fidelity(min_steps=100, max_steps=900, rung_evaluation={"seeds": 2})  # caps given: signal capped
    assert mine.signal == "capped" and (mine.rung_evaluation.seeds, mine.rung_evaluation.epochs) == (2, None)
    # the signal is final when the spec loads: probes (the replay's best halving signal on dev), mlm without tasks
    search = {"fidelity": {"min_steps": 10, "max_steps": 90}}
    assert load_spec(write_spec(tmp_path / "a", minimal(search=search))).search.fidelity.signal == "probe"
    alone = minimal(search=search, objectives=[{"metric": "params"}, {"metric": "latency_ms"}])
    alone["data"]["tasks"] = {}
    assert load_spec(write_spec(tmp_path / "b", alone)).search.fidelity.signal == "mlm"


@pytest.mark.parametrize(("fidelity", "space", "expected"), [
    ({"signal": "distill"}, {}, "search.fidelity.signal: Input should be 'probe', 'mlm', 'capped' or 'full'"),
    ({"signal": "mlm", "rung_evaluation": {"seeds": 1}}, {},
     "search.fidelity: rung_evaluation caps the evaluation of signal capped, and signal is mlm"),
    ({"rung_zero": True}, {"layers": [6], "hidden": [312, 768]},
     "search.fidelity.rung_zero: candidates of hidden size 768 (the teacher's) end with the depth distillation, and "
     "no training-free stage (prune, trim_vocab) comes before it in stages.order"),
])
def test_a_bad_rung_signal_or_rung_zero_names_the_field(tmp_path, fidelity, space, expected):
    search = {"fidelity": {"min_steps": 10, "max_steps": 90, **fidelity}}
    path = write_spec(tmp_path, minimal(search=search, distill={"steps": 90}, **({"space": space} if space else {})))
    (line,) = problems(path)
    assert line.startswith(f"{path}: {expected}"), line


def test_rung_zero_takes_a_training_free_stage_before_the_last_distillation(tmp_path):
    from search.prepare import trial_context

    fidelity = {"min_steps": 10, "max_steps": 90, "rung_zero": True}
    spec = load_spec(write_spec(tmp_path / "a", minimal(search={"fidelity": fidelity})))  # every hidden truncates
    assert trial_context(spec, "teacher", XLMR_BASE).rungs == (0, 10, 30, 90)
    trimmed_first = minimal(search={"fidelity": fidelity}, space={"layers": [6], "hidden": [312, 768]},
                            distill={"steps": 90}, stages={"order": ["trim_vocab", "distill", "prune", "truncate"]})
    assert load_spec(write_spec(tmp_path / "b", trimmed_first)).search.fidelity.rung_zero
    truncated_first = minimal(search={"fidelity": fidelity}, distill={"steps": 90},
                              stages={"order": ["truncate", "distill", "prune", "trim_vocab"]})
    (line,) = problems(write_spec(tmp_path / "c", truncated_first))
    assert "search.fidelity.rung_zero: truncate comes before distill in stages.order" in line, line


def test_a_rung_signal_that_needs_tasks_is_refused_without_them(tmp_path):
    data = minimal(search={"fidelity": {"min_steps": 10, "max_steps": 90, "signal": "probe"}},
                   objectives=[{"metric": "params", "direction": "min"}, {"metric": "latency_ms", "direction": "min"}])
    data["data"]["tasks"] = {}
    path = write_spec(tmp_path, data)
    assert problems(path) == [f"{path}: search.fidelity.signal: probe scores the labelled tasks and data.tasks is "
                              "empty; add a task or rank the rungs by mlm"]
    data["search"]["fidelity"]["signal"] = "mlm"
    spec = load_spec(write_spec(tmp_path / "mlm", data))
    from search.prepare import trial_context

    context = trial_context(spec, "teacher", XLMR_BASE)
    assert context.rung_signal == "mlm" and context.signal_settings == spec.search.fidelity.settings
    assert context.plan.rung_evaluation is None


def test_rung_evaluation_caps_the_evaluation_below_the_top_rung(tmp_path, monkeypatch):
    import search.prepare
    from tests.search.backend import use_fake_trials

    fidelity = {"min_steps": 10, "max_steps": 90, "rung_evaluation": {"seeds": 1, "epochs": 2, "max_train_examples": 50}}
    evaluation = {"seeds": [3, 4], "pos": {"epochs": 1}, "ner": {"max_train_examples": 20}}
    spec = load_spec(write_spec(tmp_path, minimal(search={"fidelity": fidelity}, evaluation=evaluation)))
    cheap = spec.search.fidelity.rung_evaluation.apply(spec.evaluation)
    assert cheap.seeds == (3,) and spec.evaluation.seeds == (3, 4)
    assert (cheap.pos.epochs, cheap.ner.epochs, cheap.topic.epochs) == (1, 2, 2)  # caps, never raises
    assert (cheap.ner.max_train_examples, cheap.pos.max_train_examples) == (20, 50)
    assert cheap.topic.lr == spec.evaluation.topic.lr and cheap.topic.reduction_factor == spec.evaluation.topic.reduction_factor
    with pytest.raises(SpecError, match=r"search.fidelity.rung_evaluation.epochs: Input should be greater than 0"):
        load_spec(write_spec(tmp_path / "bad", minimal(search={"fidelity": {**fidelity, "rung_evaluation": {"epochs": 0}}})))
    with pytest.raises(SpecError, match=r"search.fidelity.rung_evaluation.epoch: unknown key; expected one of: seeds, epochs, max_train_examples"):
        load_spec(write_spec(tmp_path / "typo", minimal(search={"fidelity": {**fidelity, "rung_evaluation": {"epoch": 1}}})))
    use_fake_trials("tests.search.fakes:fake_trial", monkeypatch.setattr)  # prepare without teacher or preflight
    context, _ = search.prepare.prepare(spec)
    assert context.rungs == (10, 30, 90) and context.plan.rung_evaluation == cheap
    assert context.plan.evaluation == spec.evaluation


def test_the_teachers_config_is_read_once_and_carried(tmp_path, monkeypatch):
    """Loading reads the teacher's config; every later step of the search (dry run sizes, preflight,
    the trials' context) gets the carried copy, and a spec copied onto another teacher reads its own."""
    import search.spec
    from search.spec import teacher_config

    reads = []
    real = search.spec.read_teacher_config
    monkeypatch.setattr(search.spec, "read_teacher_config", lambda model: reads.append(model) or real(model))
    spec = load_spec(write_spec(tmp_path, minimal()))
    assert len(reads) == 1
    config = teacher_config(spec)
    config["hidden_size"] = 1  # a copy: the carried config stays as read
    assert teacher_config(spec)["hidden_size"] == 768 and len(reads) == 1
    other = write_teacher(tmp_path / "other", {**XLMR_BASE, "num_hidden_layers": 6})
    moved = spec.model_copy(update={"teacher": spec.teacher.model_copy(update={"model": str(other)})})
    assert teacher_config(moved)["num_hidden_layers"] == 6 and len(reads) == 2
