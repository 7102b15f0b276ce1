"""Hypothesis profiles: ``ci`` runs the example counts the fuzz tests ask for, ``dev`` a tenth.

``make test`` and CI set ``HYPOTHESIS_PROFILE=ci``; a developer's plain ``pytest`` (and
``make check``) gets ``dev``, quick enough to run between edits.
"""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
if PROFILE not in ("ci", "dev"):
    raise ValueError(f"HYPOTHESIS_PROFILE must be ci or dev, not {PROFILE!r}")

settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(PROFILE)


def examples(ci_count: int) -> int:
    """The number of examples a fuzz test runs under the active profile.

    Args:
        ci_count: the count the test runs in CI (the ``ci`` profile).

    Returns:
        ``ci_count`` under ``ci``; a tenth of it, at least 5, under ``dev``.
    """
    return ci_count if PROFILE == "ci" else max(5, ci_count // 10)
