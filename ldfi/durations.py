"""Durations as users write them ("30s", "500ms", "1.5s", "2m", "1h", or a bare
number of seconds), parsed into float seconds.

Kept apart from the scenario parser so that command-line flags and future
fault specs accept exactly the same spellings.
"""

from __future__ import annotations

import math
import re

DURATION_FORMS = '"500ms", "1.5s", "30s", "2m", "1h" or a number of seconds'

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_SECONDS_PER_UNIT = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`; ValueError (TypeError for a non-number, non-string)
    naming the accepted forms when it is not a non-negative duration.

    ValueError/TypeError rather than UserError so that argparse `type=` and
    callers that know the file and line can each phrase the error themselves.
    """
    # bool is an int subclass, and `timeout = true` is a mistake, not 1 second.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"a duration must be a string or a number, not {type(value).__name__}")
    if isinstance(value, str):
        return _parse_text(value)
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite number >= 0")
    return seconds


def _parse_text(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: write {DURATION_FORMS}")
    number, unit = match.groups()
    # divide rather than multiply by 0.001 so that "500ms" is exactly 0.5
    seconds = float(number) / 1000 if unit == "ms" else float(number) * _SECONDS_PER_UNIT[unit]
    if not math.isfinite(seconds):  # 400 digits overflow to inf
        raise ValueError(f"invalid duration {text!r}: too large")
    return seconds
