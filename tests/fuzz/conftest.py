"""Hypothesis profiles and the seed for the fuzz suite.

``CI=true`` (set by CI) loads the ``ci`` profile: 10,000 examples per target, no deadline
(a loaded CI machine must not turn slowness into failures). Locally the ``dev`` profile
runs 300 examples per target; ``HYPOTHESIS_PROFILE=ci`` gives the CI run on a laptop.

Every session fuzzes under one seed, chosen at random unless ``--hypothesis-seed=N`` is
given, and a failing fuzz test prints it: ``pytest tests/fuzz --hypothesis-seed=N``
replays the same search. Hypothesis also prints the failing example and a
``@reproduce_failure`` blob (``print_blob``) to pin it in the test.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, core, settings

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large,
                 HealthCheck.filter_too_much]

settings.register_profile(
    "ci", max_examples=10_000, deadline=None, derandomize=False, print_blob=True,
    database=None, suppress_health_check=_SLOW_IS_FINE)
settings.register_profile(
    "dev", max_examples=300, deadline=None, print_blob=True, database=None,
    suppress_health_check=_SLOW_IS_FINE)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI", "").lower() in ("1", "true") else "dev"))


def pytest_configure(config: pytest.Config) -> None:
    # What --hypothesis-seed does, with a seed of our own when none is given, so that
    # every run can be replayed and the seed is known before anything fails.
    if core.global_force_seed is None:
        core.global_force_seed = random.SystemRandom().randrange(2**32)


def reproduce_hint() -> str:
    return (f"fuzz seed {core.global_force_seed} (profile {settings.get_current_profile_name()}"
            f"): replay with pytest tests/fuzz --hypothesis-seed={core.global_force_seed}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and "tests/fuzz" in str(item.path).replace(os.sep, "/"):
        report.sections.append(("hypothesis seed", reproduce_hint()))


def pytest_report_header(config: pytest.Config) -> str:
    return reproduce_hint()
