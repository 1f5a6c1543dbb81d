"""A page's conversation: its id (kept in the URL as ?c=…, so a refresh or a shared link reopens it), its turns
read back from history, each drawn as the question beside its answer, and what the next question sends.

Decisions:
- History is the conversation's only store: every turn is a history row with the conversation's id, so what
  the page shows after a refresh is exactly what was recorded (stopped and failed turns included).
- The model gets the earlier turns that have an answer (answered, or stopped with the text that arrived) as
  question/answer pairs; a failed turn is shown but not sent. A model that cannot take earlier turns gets each
  question on its own, and the page says so in one line.
- A turn's images travel with it: a follow-up without attachments asks about the images of the turn before
  (a chat template's earlier turns carry text only, so they are sent again with each question).
- Regenerate asks the last question again with the same images and earlier turns; the new row replaces the
  old one in the conversation (history keeps both, linked by rerun_of).
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import streamlit as st
from PIL import Image

from core.history import HistoryEntry, HistoryStore, conversations
from core.records import Turn
from core.serving.recorded_ask import ImageUpload
from core.statuses import EntryStatus
from dashboard.widgets.answer_panel import show_entry
from dashboard.widgets.interface_language import t

PARAM = "c"
_VALID = re.compile(r"^[0-9a-f]{12}$")


def _state_key(page: str) -> str:
    return f"{page}-conversation"


def conversation_id(page: str, store: HistoryStore) -> str:
    """This page's open conversation ('' before its first question): from session state, else from the URL
    when that names a conversation of this page (a page switch may carry another page's ?c= along)."""
    key = _state_key(page)
    if key not in st.session_state:
        from_url = st.query_params.get(PARAM, "")
        st.session_state[key] = from_url if _VALID.match(from_url) and turns(store, page, from_url) else ""
    current: str = st.session_state[key]
    if current and st.query_params.get(PARAM) != current:
        st.query_params[PARAM] = current
    # An id of another page's conversation stays in the URL (this page ignores it): going back there keeps it.
    return current


def start(page: str) -> str:
    """A new conversation id for the first question, kept in session state and the URL."""
    new = uuid.uuid4().hex[:12]
    st.session_state[_state_key(page)] = new
    st.query_params[PARAM] = new
    return new


def _forget(page: str) -> None:
    st.session_state[_state_key(page)] = ""
    st.session_state.pop(f"{page}-last-filled", None)  # the template fills the new first question again
    if PARAM in st.query_params:
        del st.query_params[PARAM]


def new_button(page: str, *, disabled: bool) -> None:
    st.button(t("conversation.new"), key=f"{page}-new-conversation", icon=":material/add_comment:", on_click=_forget,
              args=(page,), disabled=disabled)


def turns(store: HistoryStore, page: str, conversation: str) -> tuple[HistoryEntry, ...]:
    """The conversation's turns on this page (an id from another page's URL opens nothing here)."""
    return tuple(entry for entry in conversations.turns(store, conversation) if entry.page == page)


def earlier_turns(entries: tuple[HistoryEntry, ...]) -> tuple[Turn, ...]:
    """What the model is sent of the conversation so far: every turn that has answer text."""
    return tuple(Turn(e.question, e.answer) for e in entries
                 if e.status in (EntryStatus.ANSWERED, EntryStatus.STOPPED) and e.answer)


def images_of(store: HistoryStore, entry: HistoryEntry) -> tuple[ImageUpload, ...]:
    """A turn's images as uploads, from history's image store (those it could not read were never kept)."""
    found = (store.image(sha) for sha in entry.image_hashes)
    return tuple(ImageUpload(image.data, image.sha256[:12]) for image in found if image is not None)


def show_question(question: str, thumbnails: Sequence[bytes | Image.Image]) -> None:
    """The analyst's turn: the question as plain text, with the images attached to it."""
    with st.chat_message("user"):
        st.text(question)
        if thumbnails:
            st.image(list(thumbnails), width=96)


def show(store: HistoryStore, page: str, entries: tuple[HistoryEntry, ...], *, can_regenerate: bool) -> bool:
    """Every turn, question beside answer; True when Regenerate (under the last answer) was clicked."""
    regenerate = False
    previous: tuple[str, ...] = ()
    for number, entry in enumerate(entries, start=1):
        changed = entry.image_hashes != previous  # thumbnails only where the turn's images changed
        thumbnails = [image.thumbnail for sha in entry.image_hashes if changed and (image := store.image(sha))]
        previous = entry.image_hashes
        show_question(entry.question, thumbnails)
        with st.chat_message("assistant"):
            show_entry(entry, copyable=True, compact=True)
            if number == len(entries) and can_regenerate:
                regenerate = st.button(t("conversation.regenerate"), key=f"{page}-regenerate-{entry.id}",
                                       icon=":material/refresh:")
    return regenerate
