"""The Optuna side: distributions named like the spec, the max_params constraint, distinct proposals."""

from __future__ import annotations

import pickle

import optuna
import pytest

from search.sampler import DistinctSampler, constraints_func, distributions, make_sampler
from search.space import student_parameters, to_candidate
from search.spec import load_spec
from tests.search.fakes import TEACHER_CONFIG, write_spec


def test_distributions_use_the_specs_names_and_choices(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    space = distributions(spec)
    assert list(space) == ["layers", "ffn", "hidden", "vocab", "init"]
    assert space["vocab"].choices == ("full", 100) and space["layers"].choices == (1, 2, 3)


def test_constraints_func_follows_max_params(tmp_path):
    spec = load_spec(write_spec(tmp_path, extra="constraints: {max_params: 20000}"))
    func = constraints_func(spec, TEACHER_CONFIG)

    class Trial:
        params = {"layers": 3, "ffn": 37, "hidden": 32, "vocab": "full", "init": "stride"}

    assert student_parameters(TEACHER_CONFIG, to_candidate(Trial.params)) > 20000 and func(Trial)[0] > 0
    Trial.params = {"layers": 1, "ffn": 16, "hidden": 16, "vocab": 100, "init": "stride"}
    assert func(Trial)[0] <= 0
    assert pickle.loads(pickle.dumps(func))(Trial) == func(Trial)
    (tmp_path / "free").mkdir()
    assert constraints_func(load_spec(write_spec(tmp_path / "free")), TEACHER_CONFIG) is None


@pytest.mark.parametrize("kind", ["nsga2", "tpe"])
def test_spec_sampler_is_seeded_and_distinct(tmp_path, kind):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(write_spec(tmp_path, search=f"sampler: {kind}"))

    def draws():
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(spec, TEACHER_CONFIG))
        out = []
        for _ in range(6):
            trial = study.ask(fixed_distributions=distributions(spec))
            out.append(tuple(trial.params.values()))
            study.tell(trial, [trial.params["layers"] * 0.1, trial.params["hidden"]])
        return out

    first = draws()
    assert first == draws() and len(set(first)) == 6


@pytest.mark.parametrize("kind", ["nsga2", "tpe"])
def test_distinct_sampler_tries_every_candidate_before_repeating(tmp_path, kind):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(write_spec(tmp_path, space="layers: [1, 2]"))
    space = {name: dist for name, dist in distributions(spec).items()}
    space["vocab"] = optuna.distributions.CategoricalDistribution(["full"])
    inner = (optuna.samplers.NSGAIISampler(seed=0, population_size=2) if kind == "nsga2"
             else optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    sampler = pickle.loads(pickle.dumps(DistinctSampler(inner, space, seed=0)))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    drawn = []
    for _ in range(9):
        trial = study.ask(fixed_distributions=space)
        drawn.append(tuple(trial.params[n] for n in space))
        study.tell(trial, [trial.params["layers"] * 0.1, trial.params["hidden"]])
    assert len(set(drawn[:8])) == 8  # 2 x 2 x 2 candidates, none twice
    assert drawn[8] in drawn[:8]
