"""Hypothesis profiles of the fuzz tests.

The default profile runs a few thousand examples in all across the fuzz tests (CI);
``--hypothesis-profile=thorough`` (or the ``slow``-marked variants) runs many more.
No example database is written, so a CI run leaves no ``.hypothesis`` folder behind.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=600, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=20_000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("default")


def pytest_collection_modifyitems(config, items):  # noqa: ANN001 - pytest hook
    """``slow`` fuzz tests (tens of thousands of examples) run only with ``BENCHSUITE_SLOW_FUZZ=1``."""
    import os

    import pytest

    if os.environ.get("BENCHSUITE_SLOW_FUZZ") == "1":
        return
    skip = pytest.mark.skip(reason="thorough fuzzing: set BENCHSUITE_SLOW_FUZZ=1 to run it")
    for item in items:
        if "slow" in item.keywords and "fuzz" in str(item.fspath):
            item.add_marker(skip)
