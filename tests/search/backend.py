"""The search as the tests run it: ``python -m tests.search.backend ARGS`` is ``python -m search.run ARGS``
with the test hooks its environment names. The hooks live here, in test code: the service reads no
such variable.

- ``LRL_TRIAL_FN=module:function``: the trials call that function instead of `pipeline.trial.run_trial`
  (`search.objective.TrialContext.trial_fn`; screening calls that module's ``screen_student``), and
  the search is prepared without preflight, teacher preparation or reference scores (`fake_prepare`):
  the fake trials of `tests.search.fakes` need none of them.
- ``LRL_CRASH_AT=trial-run-open``: SIGKILL the driver inside `Tracker.log_trial` once the trial's run
  holds its metrics and artifacts, before it is marked finished; ``LRL_CRASH_AT=rescored-untagged``:
  inside `Tracker.log_rescored`, before the ``rescored`` tag. Kill-and-resume tests use them to stop the
  driver between steps that no outside signal can time.

In-process tests use `use_fake_trials` and `crash_at` with pytest's ``monkeypatch.setattr``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

TRIAL_FN_ENV = "LRL_TRIAL_FN"
CRASH_ENV = "LRL_CRASH_AT"

# each crash point: the tracker's method, the client call inside it that the driver dies before, and
# which calls of it count
_CRASH_POINTS: dict[str, tuple[str, str, Callable[..., bool]]] = {
    "trial-run-open": ("log_trial", "set_terminated", lambda *args, **kwargs: True),
    "rescored-untagged": ("log_rescored", "set_tag", lambda run_id, key, *args, **kwargs: key == "rescored"),
}


def fake_prepare(trial_fn: str) -> Callable[..., tuple[Any, dict[str, Any]]]:
    """A stand-in for `search.prepare.prepare`: the teacher as given, no preflight, no reference scores,
    and trials that call ``trial_fn``."""

    def prepare(spec, progress=None):
        from pipeline.sizes import config_parameters
        from search.prepare import materialise_synthetic, trial_context
        from search.spec import teacher_config

        spec = materialise_synthetic(spec)
        config = teacher_config(spec)
        return trial_context(spec, spec.teacher.model, config, trial_fn), {"params": config_parameters(config)}

    return prepare


def use_fake_trials(trial_fn: str, patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Prepare searches with `fake_prepare` from now on (``patch``: ``monkeypatch.setattr`` in a test)."""
    import search.prepare

    patch(search.prepare, "prepare", fake_prepare(trial_fn))


def crash_at(point: str, patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """SIGKILL this process at ``point`` (one of `_CRASH_POINTS`) from now on."""
    from search.tracking import Tracker

    method, call, counts = _CRASH_POINTS[point]
    original = getattr(Tracker, method)

    def crashing(self, *args, **kwargs):
        real = getattr(self.client, call)

        def guarded(*a, **k):
            if counts(*a, **k):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)

        setattr(self.client, call, guarded)
        try:
            return original(self, *args, **kwargs)
        finally:
            delattr(self.client, call)

    patch(Tracker, method, crashing)


def install(environ=os.environ) -> None:
    """The hooks ``environ`` names."""
    if environ.get(TRIAL_FN_ENV):
        use_fake_trials(environ[TRIAL_FN_ENV])
    if environ.get(CRASH_ENV):
        crash_at(environ[CRASH_ENV])


def main(argv: list[str] | None = None) -> int:
    install()
    from search.run import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
