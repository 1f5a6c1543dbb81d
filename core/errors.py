"""Loupe's typed errors. Every message is written for the analyst who will read it in the UI.

An error raised with a Message (core/messages.py) keeps it: its str() is the English sentence, as always, and
`message_id` / `params` let the dashboard say it in the analyst's language. One raised with plain text has no id
(`message` None) and is shown as it is.
"""
from __future__ import annotations

from collections.abc import Mapping

from core.messages import Message, ParamValue


class LoupeError(Exception):
    """Base of every refusal Loupe makes on purpose; its message is shown as-is to the analyst."""

    def __init__(self, message: str | Message = "") -> None:
        super().__init__(str(message))
        self.message = message if isinstance(message, Message) else None

    @property
    def message_id(self) -> str:
        return self.message.message_id if self.message is not None else ""

    @property
    def params(self) -> Mapping[str, ParamValue]:
        return self.message.params if self.message is not None else {}


def is_refusal(error_type: str) -> bool:
    """Whether an error recorded by its type name (history's error_type) is one of Loupe's own refusals,
    whose message is written for the analyst; any other type is a bug and is shown as one."""
    found: list[type[LoupeError]] = [LoupeError]
    while found:
        kind = found.pop()
        if kind.__name__ == error_type:
            return True
        found.extend(kind.__subclasses__())
    return False


class ConfigError(LoupeError):
    """The settings file or an environment override is wrong."""


class ImageError(LoupeError):
    """An uploaded file cannot be used as an image (not an image, truncated, too large, ...)."""


class QuestionError(LoupeError):
    """The question is empty, too long, or carries too many images."""


class ModelError(LoupeError):
    """The model cannot be found, loaded or is not allowed (e.g. remote code without opt-in)."""


class PreflightError(ModelError):
    """The model would not fit in the memory that is there; the message gives both numbers."""


class GenerationError(LoupeError):
    """Generation failed or stalled; the model stays loaded and the next question can run."""


class TemplateError(LoupeError):
    """A prompt template file is malformed or a field is missing when filling it."""


class HistoryError(LoupeError):
    """A history entry cannot be found or re-run (e.g. its image was never stored)."""


class BatchError(LoupeError):
    """A batch upload cannot be used (not a zip, unsafe names, a zip bomb, too many files, no images)."""


class ReviewError(LoupeError):
    """A review cannot be saved (unknown result, no label for an unreadable verdict)."""


class OutOfMemoryError(GenerationError):
    """The GPU (or the machine) ran out of memory while answering; the model stays loaded."""


class ModelUnloadingError(GenerationError):
    """The model is being unloaded (a switch of model or shutdown); the question may be asked again later."""


class QueueFullError(GenerationError):
    """Too many questions are waiting; the caller should try again in a while."""


class AdmissionError(QuestionError):
    """The question would need more memory than is free; the message says what to reduce."""


class ApiRequestError(LoupeError):
    """A request body the API cannot use; `param` and `code` go into OpenAI's error shape."""

    def __init__(self, message: str | Message, *, param: str | None = None, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class AccessError(LoupeError):
    """The dashboard cannot be opened: a wrong password, no name given, or no sign-in configured where one is needed."""
