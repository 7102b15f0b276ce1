"""Time-based one-time codes (RFC 6238), the one rule for users' accounts and operators.

6 digits and 30-second steps (RFC 6238's defaults); one step of clock drift is accepted either
way (section 5.2's recommendation).  pyotp computes the codes.
"""

from __future__ import annotations

import pyotp

STEP_SECONDS = 30
"""RFC 6238's default time step."""
DRIFT_STEPS = 1
"""Steps of clock drift accepted either way (RFC 6238 section 5.2)."""


def matching_step(secret: str, code: str | None, now: float) -> int | None:
    """The time step ``code`` is valid for (within ``DRIFT_STEPS`` of ``now``'s), or None.

    Args:
        secret: the base32 secret.
        code: as typed; blanks around and inside it are ignored (apps show "123 456").
        now: Unix time, seconds.

    Returns:
        The step (``Unix time // STEP_SECONDS``) to record as used, or None for a wrong code.
    """
    code = (code or "").strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now // STEP_SECONDS)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if pyotp.utils.strings_equal(totp.at(step * STEP_SECONDS), code):
            return step
    return None
