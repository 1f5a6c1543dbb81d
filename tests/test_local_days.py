"""History's and Review's date filters are the analyst's days: the days picked, in the analyst's time zone,
become UTC bounds in one core function (core/history/local_days.py)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from core.errors import HistoryError
from core.history import HistoryEntry, HistoryFilter, HistoryStore, queries, reviews
from core.history.local_days import utc_bounds

SHANGHAI = "Asia/Shanghai"  # UTC+8 all year
DEC_1, DEC_2 = dt.date(2026, 12, 1), dt.date(2026, 12, 2)
LATE_UTC = "2026-12-01T17:30:00.000+00:00"  # 2026-12-02 01:30 in Shanghai


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "history.sqlite3")


def test_a_shanghai_day_is_16_00_utc_the_day_before_to_16_00_utc() -> None:
    assert utc_bounds(DEC_2, DEC_2, SHANGHAI) == ("2026-12-01T16:00:00", "2026-12-02T16:00:00")
    assert utc_bounds(DEC_1, DEC_2, "UTC") == ("2026-12-01T00:00:00", "2026-12-03T00:00:00")
    assert utc_bounds(None, DEC_1, SHANGHAI) == (None, "2026-12-01T16:00:00")
    assert utc_bounds(None, None, SHANGHAI) == (None, None)


def test_a_day_that_springs_forward_is_23_hours_long() -> None:
    start, end = utc_bounds(dt.date(2026, 3, 29), dt.date(2026, 3, 29), "Europe/Berlin")  # CET → CEST
    assert (start, end) == ("2026-03-28T23:00:00", "2026-03-29T22:00:00")


def test_an_unknown_zone_is_refused_in_words() -> None:
    with pytest.raises(HistoryError, match="Mars/Olympus"):
        utc_bounds(DEC_1, DEC_1, "Mars/Olympus")


def test_a_query_late_in_the_utc_day_is_on_the_next_day_in_shanghai(store: HistoryStore) -> None:
    late = store.record(HistoryEntry(session_id="s", page="playground", question="q", status="answered",
                                     answer="a", created_at=LATE_UTC)).id
    # at exactly 16:00 UTC without milliseconds: the first moment of Shanghai's 2 December
    midnight = store.record(HistoryEntry(session_id="s", page="playground", question="q", status="answered",
                                         answer="a", created_at="2026-12-01T16:00:00+00:00")).id

    def ids(first: dt.date, zone: str) -> list[int]:
        return [r.id for r in queries.listing(store, HistoryFilter(date_from=first, date_to=first,
                                                                   time_zone=zone)).rows]

    assert ids(DEC_2, SHANGHAI) == [midnight, late] and ids(DEC_1, SHANGHAI) == []
    assert ids(DEC_1, "UTC") == [midnight, late] and ids(DEC_2, "UTC") == []
    assert [r.id for r in queries.listing(store, HistoryFilter(date_from=DEC_1, date_to=DEC_2)).rows] == [
        midnight, late]  # no zone given: UTC days, as before


def test_review_dates_are_the_analysts_days_too(store: HistoryStore) -> None:
    query = store.record(HistoryEntry(session_id="s", page="moderation", question="q", status="answered",
                                      answer="{}", template_id="mod-checklist-en", verdict="pass",
                                      created_at=LATE_UTC)).id

    def ids(first: dt.date, zone: str) -> list[int]:
        found, _total = reviews.results(store, reviews.ReviewFilter(date_from=first, date_to=first, time_zone=zone),
                                        page=1, page_size=10)
        return [result.entry.id for result in found]

    assert ids(DEC_2, SHANGHAI) == [query] and ids(DEC_1, SHANGHAI) == []
    assert ids(DEC_1, "UTC") == [query]


@pytest.mark.parametrize(("zone", "day", "listed"), [("Asia/Shanghai", DEC_2, True), ("Asia/Shanghai", DEC_1, False),
                                                     ("UTC", DEC_1, True)])
def test_the_history_pages_dates_are_the_analysts_days(loupe_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                       zone: str, day: dt.date, listed: bool) -> None:
    from tests.app_pages import assert_no_exception, open_page

    monkeypatch.setenv("LOUPE_TIME_ZONE", zone)
    HistoryStore(loupe_home / "history.sqlite3").record(HistoryEntry(
        session_id="abcdefabcdef", page="documents", question="q", status="answered", answer="a", created_at=LATE_UTC))
    at = open_page("history")
    assert at.date_input(key="history-dates").label == f"Dates (days in {zone})"
    at.date_input(key="history-dates").set_value((day, day)).run()
    assert_no_exception(at)
    assert bool(at.dataframe) == listed
