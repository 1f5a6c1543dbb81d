"""The dashboard's interface text in Chinese and English, and the sidebar switch between them.

The words are data: assets/i18n/en.toml and zh.toml, one table per language with the same keys (a test
holds them equal and checks that every key the code names exists). `t(key, **fields)` looks a key up in the
analyst's language and fills its `{name}` fields:
- a str field is outside text until shown otherwise, so it is escaped for where the sentence goes (Markdown
  by default, Plotly's HTML with `escape=plotly_text`); numbers keep their format spec (`{total:,}`);
- where the text is shown as plain text (a table header, a select box's option), `escape=str`;
- `Markup(...)` marks a field as Loupe's own markup (a code span it built), placed as it is;
- a field name is a plain name: no attribute or index lookups from a table (`{x.__class__}` is refused).
A key that is not in the table raises MissingInterfaceText naming it: never a blank, never a silent
fallback.

The language: the analyst's choice in the sidebar (kept in session state across reruns and pages), else
the `interface_language` setting, else the browser's language (`st.context.locale`): Chinese for zh-*,
English otherwise. Stored values (verdicts, outcomes, override reasons) stay English words in history;
`verdict_word`, `outcome_word` and `override_reason_word` translate them as they are drawn.
"""
from __future__ import annotations

import functools
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from core.errors import LoupeError
from core.settings import ASSETS_DIR, load_settings
from dashboard.widgets.outside_text import markdown_text

TABLES_DIR = ASSETS_DIR / "i18n"
LANGUAGES = {"zh": "中文", "en": "English"}  # each named in its own language on the switch
ENGLISH = "en"
SWITCH_KEY = "interface-language"
_CHOSEN_KEY = "loupe-interface-language"  # survives pages whose script does not draw the switch
# Choices whose options are shown through translated words. A select box keeps showing the label it was
# given when the analyst picked it (the browser holds that text) until its value is set again: without this
# "全部会话" stayed in the History filter after switching to English. A page that adds such a choice adds its key.
TRANSLATED_CHOICES = ("history-session", "history-pages", "history-template", "history-outcome", "history-entry",
                      "gpu-monitor-window", "batch-templates", "batch-current",
                      *(f"{page}-{choice}" for page in ("playground", "documents", "education", "moderation")
                        for choice in ("source", "template", "sample")),
                      "compare-models", "compare-samples", "compare-saved", "compare-diff-a", "compare-diff-b",
                      "review-verdicts", "review-shown", "review-template", "review-decision", "review-reason")


class MissingInterfaceText(LookupError):
    """A key no table has: a programming error that tests/test_interface_language.py catches first."""


class Markup(str):
    """Loupe's own markup for a field (a code span it built): placed as it is, not escaped."""


class _PlainFields(string.Formatter):
    """str.format with `{name}` and `{name:spec}` only: a table cannot reach into a field's attributes."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        if not field_name.isidentifier():
            raise MissingInterfaceText(f"interface text field {{{field_name}}} is not a plain name")
        return self.get_value(field_name, args, kwargs), field_name


_FORMATTER = _PlainFields()


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = str(value)
    return flat


@functools.cache
def table(language: str) -> dict[str, str]:
    """Every key of one language's table ("history.title" → "History"), read once per process."""
    return _flatten(tomllib.loads((TABLES_DIR / f"{language}.toml").read_text(encoding="utf-8")))


def field_names(template: str) -> set[str]:
    """The `{name}` fields a table's text takes."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def interface_text(language: str, key: str, escape: Callable[[object], str] = markdown_text, **fields: object) -> str:
    """The text for `key` in `language` with its fields filled: str fields escaped with `escape`."""
    try:
        template = table(language)[key]
    except KeyError:
        raise MissingInterfaceText(f"no interface text {key!r} in assets/i18n/{language}.toml") from None
    safe = {name: value if isinstance(value, (int, float, Markup)) else escape(value) for name, value in fields.items()}
    return _FORMATTER.vformat(template, (), safe)


def current_language() -> str:
    """zh or en: the sidebar's choice, else the setting, else the browser's language."""
    chosen = st.session_state.get(_CHOSEN_KEY)
    if chosen in LANGUAGES:
        return str(chosen)
    try:
        setting = load_settings().interface_language
    except LoupeError:  # app.py shows the settings error; the words around it still need a language
        setting = "auto"
    if setting in LANGUAGES:
        return setting
    locale = (st.context.locale or "").lower()
    return "zh" if locale.startswith("zh") else ENGLISH


def t(key: str, escape: Callable[[object], str] = markdown_text, **fields: object) -> str:
    """`key`'s text in the analyst's language (see the module's docstring for fields and escaping)."""
    return interface_text(current_language(), key, escape, **fields)


def _keep_choice() -> None:
    picked = st.session_state.get(SWITCH_KEY)
    if picked not in LANGUAGES:  # a segmented control can be clicked off: keep the language that was on
        st.session_state[SWITCH_KEY] = st.session_state.get(_CHOSEN_KEY, ENGLISH)
        return
    st.session_state[_CHOSEN_KEY] = picked
    for key in TRANSLATED_CHOICES:
        if key in st.session_state:  # set to itself: sent again, with its label in the new language
            st.session_state[key] = st.session_state[key]


def show_language_switch() -> None:
    """中文 / English in the sidebar; the choice holds for the rest of this browser session."""
    language = current_language()
    st.session_state[_CHOSEN_KEY] = language
    if st.session_state.get(SWITCH_KEY) not in LANGUAGES:
        st.session_state[SWITCH_KEY] = language
    st.sidebar.segmented_control(t("sidebar.language"), list(LANGUAGES), format_func=LANGUAGES.__getitem__,
                                 key=SWITCH_KEY, on_change=_keep_choice, help=t("sidebar.language_help"))


def _word(section: str, stored: object) -> str:
    """A stored English word (a verdict, an outcome) in the analyst's language; an unknown word as it is."""
    key = f"{section}.{re.sub(r'[^a-z0-9]+', '_', str(stored).lower()).strip('_')}"
    return table(current_language()).get(key, str(stored)) if key in table(ENGLISH) else str(stored)


def verdict_word(status: object) -> str:
    """pass / needs_review / reject / unparsed / missing, as the analyst reads them (plain text)."""
    return _word("verdict", status)


def outcome_word(status: object) -> str:
    """An entry's, batch's or item's status (answered, failed, running, done, …) as the analyst reads it."""
    return _word("outcome", status)


def page_word(page: str) -> str:
    """A stored page id (moderation, batch, …) as the navigation names the page; another id (api) as it is."""
    return _word("nav", page)


def override_reason_word(reason: str) -> str:
    """One of review.REASONS in the analyst's language; an analyst's own words stay as they were written."""
    return _word("override_reason", reason) if reason else t("override_reason.no_reason_given")
