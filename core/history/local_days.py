"""The analyst's days as UTC bounds: History and Review filter on days picked in the analyst's time zone, while
rows are stamped in UTC (store.now_utc). The one conversion; the dashboard names the zone (its setting or the
browser's), core never guesses it.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

from core.errors import HistoryError

UTC_ZONE = "UTC"
# Bounds to the second, without an offset: a stamp written to the second or the millisecond, with its
# "+00:00", starts with its second's text and so sorts at or after that bound, as text (SQLite compares text).
_BOUND_FORMAT = "%Y-%m-%dT%H:%M:%S"


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise HistoryError(f"The time zone {name!r} is not one this machine knows, so dates cannot be filtered "
                           "in it: use a name such as Asia/Shanghai or UTC.") from exc


def _start_utc(day: dt.date, zone: zoneinfo.ZoneInfo) -> str:
    # A zone's midnight, in UTC (a day that changes its clock is 23 or 25 hours long).
    local_midnight = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    return local_midnight.astimezone(dt.UTC).strftime(_BOUND_FORMAT)


def utc_bounds(first: dt.date | None, last: dt.date | None, zone: str = UTC_ZONE) -> tuple[str | None, str | None]:
    """The days first..last (both inclusive; None: open) in `zone` (an IANA name) as UTC text [start, end),
    comparable with history's created_at stamps; an unknown zone is refused with a HistoryError."""
    tz = _zone(zone)
    start = _start_utc(first, tz) if first else None
    end = _start_utc(last + dt.timedelta(days=1), tz) if last else None
    return start, end
