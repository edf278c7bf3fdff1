"""Hypothesis settings shared by the property tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# deadline=None: the machine is shared; database=None: nothing written into the repository
FEW = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOME = settings(FEW, max_examples=60)
