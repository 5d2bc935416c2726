"""The one way Relay reads a duration, in configuration and on the command line alike:
a positive number with a unit, `90s`, `30m`, `2h`, `7d`, `2w` (`1.5h` too); a bare number
is seconds."""
from __future__ import annotations

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EXAMPLES = "90s, 30m, 2h, 7d or 2w"


def parse_duration(text: str) -> float:
    """Seconds; ValueError, naming the accepted forms, for anything else."""
    cleaned = str(text).strip().lower()
    unit = UNITS.get(cleaned[-1:]) if cleaned else None
    number = cleaned[:-1] if unit else cleaned
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        seconds = None
    if seconds is None or not 0 < seconds < float("inf"):
        raise ValueError(f"{text!r} is not a duration like {EXAMPLES}")
    return seconds
