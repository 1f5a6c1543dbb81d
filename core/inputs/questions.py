"""Check a question before it reaches the model, and build the Query that carries it.

`build_query` is the one check every question passes on its way to a model (the engine, the API and the
command line all go through it): the text, then the image count, and only then are images decoded, so a
refused question costs no decoding.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from core.errors import QuestionError
from core.messages import MessageText
from core.records import GenerationSettings, PreparedImage, Query, Turn
from core.settings import Settings

DEFAULT_MAX_CHARS = 200
DEFAULT_MAX_IMAGES = 4

EMPTY = MessageText("question.empty", "The question is empty. Type what you want to know about the image.")
TOO_LONG = MessageText("question.too_long", "The question is {length} characters long; the limit is {limit}. "
                                            "Shorten it or split it into several questions.")
TOO_MANY_IMAGES = MessageText("question.too_many_images",
                              "{count} images were given; a question can carry at most {limit}.")

Source = TypeVar("Source")  # what an image is before it is prepared: upload bytes, a file path, ...


def char_count(text: str) -> int:
    """A question's length as the limit counts it: Unicode characters after stripping (a Chinese '，' counts 1)."""
    return len((text or "").strip())


def validate(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Strip the question and check its length in Unicode characters (a Chinese '，' counts 1)."""
    question = (text or "").strip()
    if not question:
        raise QuestionError(EMPTY())
    length = char_count(question)
    if length > max_chars:
        raise QuestionError(TOO_LONG(length=length, limit=max_chars))
    return question


def check_image_count(count: int, *, max_images: int = DEFAULT_MAX_IMAGES) -> None:
    if count > max_images:
        raise QuestionError(TOO_MANY_IMAGES(count=count, limit=max_images))


def default_generation(settings: Settings, **changes: object) -> GenerationSettings:
    """The generation settings a question gets: the settings file's max_new_tokens, greedy, plus the asker's changes."""
    values = {"max_new_tokens": settings.max_new_tokens, **changes}
    return GenerationSettings(**values)  # type: ignore[arg-type]


def build_query(
    images: Sequence[Source | PreparedImage],
    text: str,
    settings: GenerationSettings | None = None,
    *,
    prepare: Callable[[Source], PreparedImage] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_images: int = DEFAULT_MAX_IMAGES,
    history: Sequence[Turn] = (),
) -> Query:
    """A checked Query: images in the order given, at most max_images of them. Images that are not prepared
    yet are handed to `prepare`, after every check has passed; a PreparedImage is used as it is. `history`:
    earlier turns of the same conversation, oldest first (core/inputs/conversation.py reads them)."""
    question = validate(text, max_chars=max_chars)
    check_image_count(len(images), max_images=max_images)
    prepared = tuple(image if isinstance(image, PreparedImage) else _prepare(image, prepare) for image in images)
    return Query(images=prepared, question=question, settings=settings or GenerationSettings(), history=tuple(history))


def _prepare(image: Source, prepare: Callable[[Source], PreparedImage] | None) -> PreparedImage:
    if prepare is None:
        raise TypeError(f"build_query got an unprepared image ({type(image).__name__}) and no `prepare` for it")
    return prepare(image)
