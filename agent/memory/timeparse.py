"""Liberal parsing of memory timestamps into timezone-aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

# LoCoMo writes session dates like "1:56 pm on 8 May, 2023" (snap-research/LoCoMo data/locomo10.json);
# the rest are common human and log formats tried after ISO 8601.
_FORMATS = (
    "%I:%M %p on %d %B, %Y",
    "%I:%M %p on %d %b, %Y",
    "%I:%M %p on %B %d, %Y",
    "%d %B, %Y",
    "%d %B %Y",
    "%d %b %Y",
    "%B %d, %Y",
    "%b %d, %Y",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%d.%m.%Y",
)


def to_utc(value: datetime | str | float | None, *, default: datetime | None = None) -> datetime:
    """Turn ``value`` into an aware UTC datetime.

    Accepts a datetime (naive means UTC), a Unix time in seconds, ISO 8601 text, or text in
    one of ``_FORMATS`` (strptime matches names case-insensitively; extra spaces are ignored).
    ``None`` gives ``default``, or the current time when no default is given. Raises ValueError for text no format fits,
    TypeError for other types.
    """
    if value is None:
        return default or datetime.now(UTC)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), UTC)
    if not isinstance(value, str):
        raise TypeError(f"unsupported timestamp type: {type(value).__name__}")
    text = " ".join(value.strip().split())
    try:
        return to_utc(datetime.fromisoformat(text))
    except ValueError:
        pass
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"unrecognised timestamp: {value!r}")
