"""Check a question before it reaches the model, and build the Query that carries it."""
from __future__ import annotations

from collections.abc import Sequence

from core.errors import QuestionError
from core.records import GenerationSettings, PreparedImage, Query

DEFAULT_MAX_CHARS = 200
DEFAULT_MAX_IMAGES = 4


def char_count(text: str) -> int:
    """A question's length as the limit counts it: Unicode characters after stripping (a Chinese '，' counts 1)."""
    return len((text or "").strip())


def validate(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Strip the question and check its length in Unicode characters (a Chinese '，' counts 1)."""
    question = (text or "").strip()
    if not question:
        raise QuestionError("The question is empty. Type what you want to know about the image.")
    length = char_count(question)
    if length > max_chars:
        raise QuestionError(
            f"The question is {length} characters long; the limit is {max_chars}. "
            "Shorten it or split it into several questions."
        )
    return question


def check_image_count(count: int, *, max_images: int = DEFAULT_MAX_IMAGES) -> None:
    if count > max_images:
        raise QuestionError(f"{count} images were given; a question can carry at most {max_images}.")


def build_query(
    images: Sequence[PreparedImage],
    text: str,
    settings: GenerationSettings | None = None,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> Query:
    """A validated Query: images in the order given, at most max_images of them."""
    check_image_count(len(images), max_images=max_images)
    return Query(images=tuple(images), question=validate(text, max_chars=max_chars), settings=settings or GenerationSettings())
