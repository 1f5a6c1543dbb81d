"""Times as the analyst reads them: in their time zone, not the server's and not UTC.

History stores ISO-8601 UTC text and telemetry epoch seconds; both are converted here, in one function, as
they are drawn. The zone is the `time_zone` setting when it names one, else the browser's
(`st.context.timezone`), else UTC (a browser that did not say, or named a zone this machine does not know).
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

import streamlit as st

from core.errors import LoupeError
from core.settings import load_settings

UTC_NAME = "UTC"


def analyst_zone_name() -> str:
    """The IANA name of the zone times are shown in (e.g. Asia/Shanghai), or UTC."""
    try:
        setting = load_settings().time_zone
    except LoupeError:
        setting = "auto"
    if setting != "auto":
        return setting
    browser = st.context.timezone or ""
    try:
        zoneinfo.ZoneInfo(browser)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC_NAME
    return browser


def analyst_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(analyst_zone_name())


def display_time(moment: str | float | dt.datetime, zone: dt.tzinfo | None = None) -> str:
    """'2026-12-02 08:05:03' in the analyst's zone (or `zone`) from stored ISO text (UTC when it names no
    offset), epoch seconds or a datetime; stored text that is not a time is shown as it is."""
    if isinstance(moment, dt.datetime):
        when = moment
    elif isinstance(moment, (int, float)):
        when = dt.datetime.fromtimestamp(moment, dt.UTC)
    else:
        try:
            when = dt.datetime.fromisoformat(moment)
        except ValueError:
            return moment
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(zone or analyst_zone()).strftime("%Y-%m-%d %H:%M:%S")
