"""The conversation's question box: st.chat_input with image attachments, checked before anything is asked.

Decisions:
- The live character count is st.chat_input's own: given max_chars it shows "17/200" under the box while the
  analyst types, takes no keystroke past the limit, and keeps its send arrow disabled while the box is empty.
  Streamlit's text_area counts only on Ctrl+Enter or blur; no custom component is needed for chat_input.
- Whatever the page can know before the model runs is refused here, with the reason shown under the
  conversation, and is not a history row: an empty question, one over max_question_chars (a template filled
  into the box, a value set by a script), more attachments than the model takes, no image at all. What only
  core can know (an image it cannot read, a model that refuses) goes to core, which records it.
- A scenario template fills the box (changing the template or a field refills it; the analyst's own typing
  stays until then), so the first question of a conversation is the template's.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.inputs import questions
from core.serving.recorded_ask import ImageUpload
from dashboard.widgets.interface_language import t


@dataclass(frozen=True)
class Submitted:
    """A question the analyst sent: its text and the images attached to it (none: the conversation's own)."""

    question: str
    attachments: tuple[ImageUpload, ...]


def box_key(page: str) -> str:
    return f"{page}-chat"


def prefill(page: str, template_id: str, filled: str) -> None:
    """Put a template's question in the box when the template or its fields changed since the last fill."""
    filled_key = f"{page}-last-filled"
    if st.session_state.get(filled_key) != (template_id, filled):
        st.session_state[box_key(page)] = filled
        st.session_state[filled_key] = (template_id, filled)


def question_box(page: str, *, limit: int, max_images: int, file_types: list[str]) -> Submitted | None:
    """The box, pinned at the bottom of the page; what was sent this run, if anything."""
    sent = st.chat_input(
        t("chat.placeholder", escape=str, limit=max_images), key=box_key(page), max_chars=limit, accept_file="multiple",
        file_type=file_types, submit_mode="disable",
    )
    if sent is None:
        return None
    files = getattr(sent, "files", None) or []
    text = sent if isinstance(sent, str) else (getattr(sent, "text", "") or "")
    return Submitted(question=text, attachments=tuple(ImageUpload(f.getvalue(), f.name) for f in files))


def refusal(submitted: Submitted, *, limit: int, max_images: int, has_image: bool) -> str | None:
    """Why the question cannot be asked as it is, as Markdown in the analyst's language (None: it can); these
    never reach the model or history."""
    length = questions.char_count(submitted.question)
    if length == 0:
        return t("chat.empty")
    if length > limit:
        return t("chat.too_long", length=length, limit=limit)
    if len(submitted.attachments) > max_images:
        return t("chat.too_many", count=len(submitted.attachments), limit=max_images)
    if not submitted.attachments and not has_image:
        return t("chat.no_image")
    return None
