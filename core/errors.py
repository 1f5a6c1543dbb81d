"""Loupe's typed errors. Every message is written for the analyst who will read it in the UI."""


class LoupeError(Exception):
    """Base of every refusal Loupe makes on purpose; its message is shown as-is to the analyst."""


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

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class AccessError(LoupeError):
    """The dashboard cannot be opened: a wrong password, no name given, or no sign-in configured where one is needed."""
