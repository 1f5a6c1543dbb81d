"""Core's sentences (typed errors' messages, image preparation notes, refusals) in the analyst's language.

core/ stays language-free: each sentence it says carries a message id and its parameters (core/messages.py).
`core_text` is the one place that turns one into the analyst's language, from the `core.<message_id>` entries
of assets/i18n/{en,zh}.toml:
- in English it is core's own sentence, exactly as before (en.toml's entries mirror it, a test holds them
  equal, so both tables keep the same keys);
- in another language its table's sentence, its fields filled; a str parameter may be outside text (a file
  name, a server's reply), so it is escaped for where the sentence is drawn (Markdown by default);
- a sentence without an id (an error raised with plain text, a history row from before ids were kept) or an
  id without an entry is shown in English, escaped the same way: never blank.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from core.errors import LoupeError
from core.messages import Message
from dashboard.widgets.interface_language import ENGLISH, current_language, interface_text, table
from dashboard.widgets.outside_text import markdown_text

SECTION = "core"


def core_text(said: Message | LoupeError | str, escape: Callable[[object], str] = markdown_text) -> str:
    """`said` (a Message, a typed error or core's plain English text) in the analyst's language, escaped."""
    return core_text_in(current_language(), said, escape)


def core_text_in(language: str, said: Message | LoupeError | str,
                 escape: Callable[[object], str] = markdown_text) -> str:
    """`said` in `language` (see the module's docstring): its table's sentence, else core's English."""
    message = said.message if isinstance(said, LoupeError) else said
    if not isinstance(message, Message):
        return escape(str(said))
    key = f"{SECTION}.{message.message_id}"
    if language == ENGLISH or key not in table(language):
        return escape(message.text)
    return interface_text(language, key, escape, **message.params)


def note_texts(notes: Sequence[str], messages: Sequence[Message],
               escape: Callable[[object], str] = markdown_text) -> list[str]:
    """Notes (an image's preparation, a model card's) in the analyst's language: each from its message, found by
    its English text; a note without one (said with no id, or kept before ids were) in English."""
    by_text = {message.text: message for message in messages}
    return [core_text(by_text.get(note, note), escape) for note in notes]


def notes_text(notes: Sequence[str], messages: Sequence[Message]) -> str:
    """The notes as one line of Markdown, joined as the analyst's language punctuates a list. In English they
    are placed as they always were: Loupe's own sentences about sizes and orientations, not outside text."""
    if current_language() == ENGLISH:
        return "; ".join(notes)
    return ("；" if current_language() == "zh" else "; ").join(note_texts(notes, messages))
