"""The Optuna side of the search: distributions, the seeded sampler, constraints. The only module
that imports optuna.

Constraint handling: ``constraints.max_params`` is known from the teacher's config alone, so the
sampler gets a ``constraints_func`` (NSGA-II and TPE both take one) that ranks a candidate breaking
it below every feasible one; such a candidate is sized, not trained (`search.objective`).
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler

from search.schema import Spec
from search.space import choices, student_parameters, to_candidate

__all__ = ["DistinctSampler", "constraints_func", "distributions", "make_sampler", "study_storage"]

_LOCK = type(threading.Lock())


def distributions(spec: Spec) -> dict[str, CategoricalDistribution]:
    """Categorical distributions of the space's parameters (`search.space.PARAMS`)."""
    return {name: CategoricalDistribution(list(values)) for name, values in choices(spec).items()}


def _constraint_values(teacher_config: Mapping[str, Any], max_params: int, trial: Any) -> list[float]:
    try:
        params = student_parameters(teacher_config, to_candidate(trial.params))
    except (KeyError, ValueError, TypeError):
        return [0.0]
    return [float(params - max_params)]


def constraints_func(spec: Spec, teacher_config: Mapping[str, Any]) -> Callable[[Any], Sequence[float]] | None:
    """Optuna ``constraints_func`` (value <= 0 is feasible) for ``max_params``; picklable."""
    if spec.constraints.max_params is None:
        return None
    return functools.partial(_constraint_values, dict(teacher_config), spec.constraints.max_params)


def make_sampler(spec: Spec, teacher_config: Mapping[str, Any]) -> BaseSampler:
    """The spec's seeded sampler (NSGA-II or TPE) behind a `DistinctSampler`."""
    seed = spec.search.seed
    constraints = constraints_func(spec, teacher_config)
    if spec.search.sampler == "tpe":
        inner = optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
    else:
        population = max(2, min(50, spec.search.num_samples // 2))
        inner = optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints, population_size=population)
    return DistinctSampler(inner, distributions(spec), seed=seed)


def study_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's database (SQLite here), so a study can be reloaded and inspected outside Ray."""
    return optuna.storages.RDBStorage(url)


class DistinctSampler(BaseSampler):
    """An Optuna sampler wrapper that does not propose a candidate the study already has.

    The space is a small product of categoricals, and NSGA-II's offspring (or independent random
    draws) repeat candidates often: 8 trials of the demo drew only 5 distinct students. Every
    proposal is checked against the study's trials; a repeat is re-drawn from the inner sampler a
    few times, then replaced by a random unseen candidate. Once every candidate has been tried,
    repeats are allowed (a repeat is cheap: its stages and evaluation are cached). Module-level and
    picklable, so that Tune can save the searcher's state: Optuna 5.1's NSGA-II holds a thread lock,
    which is left out of the pickle and made anew on loading.

    Args:
        inner: the sampler that proposes (NSGA-II or TPE, seeded).
        space: ``{name: CategoricalDistribution}`` of the search.
        seed: seed of the fallback draw.
    """

    def __init__(self, inner: BaseSampler, space: Mapping[str, CategoricalDistribution], seed: int | None = None) -> None:
        self.inner, self.space = inner, dict(space)
        self.rng = random.Random(seed)

    def __getstate__(self) -> dict[str, Any]:
        fields = vars(self.inner)
        locks = sorted(name for name, value in fields.items() if isinstance(value, _LOCK))
        kept = {name: value for name, value in fields.items() if name not in locks}
        return {**vars(self), "inner": (type(self.inner), kept, locks)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        kind, fields, locks = state["inner"]
        inner = kind.__new__(kind)
        inner.__dict__.update(fields, **{name: threading.Lock() for name in locks})
        self.__dict__.update(state, inner=inner)

    def infer_relative_search_space(self, study, trial):
        return self.space

    def sample_relative(self, study, trial, search_space):
        seen = {self._key(t.params) for t in study.get_trials(deepcopy=False) if t.number != trial.number and t.params}
        inner_space = self.inner.infer_relative_search_space(study, trial)
        proposal: dict[str, Any] = {}
        for _ in range(5):
            proposal = dict(self.inner.sample_relative(study, trial, inner_space)) if inner_space else {}
            for name, dist in self.space.items():
                if name not in proposal:
                    proposal[name] = self.inner.sample_independent(study, trial, name, dist)
            if self._key(proposal) not in seen:
                return proposal
        names = list(self.space)
        unseen = [combo for combo in itertools.product(*(self.space[n].choices for n in names)) if combo not in seen]
        return dict(zip(names, self.rng.choice(unseen))) if unseen else proposal

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self.inner.reseed_rng()

    def _key(self, params: Mapping[str, Any]) -> tuple:
        return tuple(params.get(name) for name in self.space)

