"""The one way Relay reads a duration, in configuration and on the command line alike:
a positive number with a unit, `90s`, `30m`, `2h`, `7d`, `2w` (`1.5h` too); a bare number
is seconds. A moment (`parse_when`) is a duration ago, or a date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An age (`2h`, `7d`: that long ago), a date (`2026-11-20`: midnight UTC) or an ISO
    date-time (UTC unless it names an offset)."""
    text = text.strip()
    try:
        return (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a date (2026-11-20), a date-time (2026-11-20T14:00) nor an age like {EXAMPLES}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """A duration as a reader takes it in: `90s`, `45m`, `1.5h`, `3d`."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{round(seconds / 3600, 1):g}h"
    return f"{round(seconds / 86400, 1):g}d"
