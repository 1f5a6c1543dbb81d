"""The remote OpenAI-compatible model Compare can put beside the local one (setting `openai_base_url`).

It is loaded (the server asked for its models) only when an analyst chooses it, once per process and URL,
and shared by every session like the local model. Its requests go through its own fair queue.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import urlparse

import streamlit as st

from core.analysis.compare import NO_REMOTE
from core.errors import LoupeError
from core.serving.engine import Engine, load_engine
from core.settings import Settings
from dashboard.widgets.interface_language import t


@dataclass(frozen=True)
class RemoteChoice:
    """What the model list offers for the remote server: its label (plain text, in the analyst's language), and why
    it cannot be used ("" if it can)."""

    label: str
    problem: str


def remote_choice(settings: Settings) -> RemoteChoice | None:
    """None when the loaded model is itself the remote server (one model only)."""
    if settings.backend == "openai":
        return None
    if not settings.openai_base_url:
        return RemoteChoice(t("compare.remote_not_configured", escape=str), NO_REMOTE)
    host = urlparse(settings.openai_base_url).netloc or settings.openai_base_url
    return RemoteChoice(t("compare.remote_at", escape=str, host=host), "")


@st.cache_resource(show_spinner=False)
def _remote_engine(settings: Settings) -> Engine:
    # The remote server picks its own model: `model` here names the local one.
    return load_engine(dataclasses.replace(settings, backend="openai", model=""))


def remote_engine(settings: Settings) -> tuple[Engine | None, str]:
    """The remote engine, or None and why it cannot be reached (a failed load is tried again next run)."""
    try:
        return _remote_engine(settings), ""
    except LoupeError as exc:
        return None, t("compare.remote_unusable", escape=str, url=settings.openai_base_url, reason=str(exc))
