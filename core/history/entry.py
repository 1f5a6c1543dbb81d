"""The records history writes and reads: one query (HistoryEntry), one stored image, one page of a listing."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import LoupeError
from core.messages import Message
from core.records import Answer
from core.statuses import EntryStatus


class ParsedVerdict(Protocol):
    """What an entry keeps of a moderation verdict (core.inputs.moderation.Verdict), without importing it."""

    @property
    def status(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HistoryEntry:
    """One query as history keeps it: who asked, where, what, what came back or went wrong, and under what."""

    session_id: str
    page: str
    question: str
    status: EntryStatus
    id: int | None = None  # set once recorded
    created_at: str = ""  # ISO-8601 UTC; set when recorded if empty
    template_id: str = ""
    template_hash: str = ""
    image_hashes: tuple[str, ...] = ()
    image_notes: tuple[str, ...] = ()
    answer: str = ""
    truncated: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_per_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # queue, preprocess, vision, prefill, decode, total (s)
    peak_memory_gb: dict[str, float] = field(default_factory=dict)  # "cuda:0" → GB, "cpu" → RSS GB
    error: str = ""
    error_type: str = ""  # the LoupeError subclass, e.g. "QuestionError"
    verdict: str = ""  # moderation only: pass | needs_review | reject | unparsed
    verdict_detail: dict[str, Any] = field(default_factory=dict)  # Verdict.to_json()
    stamp: dict[str, Any] = field(default_factory=dict)  # ReproStamp.to_json()
    rerun_of: int | None = None
    conversation_id: str = ""  # the page conversation this turn belongs to ('' = a question on its own)
    error_message: Message | None = None  # `error` with its id and parameters, when core's sentence has one
    image_note_messages: tuple[Message, ...] = ()  # `image_notes` with their ids (core/messages.py)

    def message_ids_json(self) -> dict[str, Any]:
        """The `message_ids` column: the error's and the notes' ids and parameters."""
        return {"error": self.error_message.to_json() if self.error_message else None,
                "image_notes": [note.to_json() for note in self.image_note_messages]}

    @property
    def created(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.created_at)

    @classmethod
    def from_answer(cls, answer: Answer | None, *, session_id: str, page: str, question: str,
                    status: EntryStatus | None = None, text: str | None = None,
                    error: BaseException | Message | str = "",
                    error_type: str = "", elapsed_s: float | None = None, created_at: str = "",
                    template_id: str = "", template_hash: str = "", image_hashes: tuple[str, ...] = (),
                    image_notes: tuple[str, ...] = (), verdict: ParsedVerdict | None = None,
                    stamp: dict[str, Any] | None = None, rerun_of: int | None = None,
                    conversation_id: str = "", image_note_messages: tuple[Message, ...] = ()) -> HistoryEntry:
        """The entry for one asked question: its Answer, or (answer None) what failed or was cut short.

        `status` defaults to answered with an answer, failed without; `text` (the partial text of a failure
        or a stop, which marks a stopped entry truncated) defaults to the answer's; an exception as `error`
        gives its message (or, empty, its type's name) and `error_type`. Without an answer, `elapsed_s`
        (when known) is kept as the total time.
        """
        if status is None:
            status = EntryStatus.ANSWERED if answer is not None else EntryStatus.FAILED
        # a Message: a sentence core says without raising (a stop)
        error_message = error.message if isinstance(error, LoupeError) else error if isinstance(error, Message) else None
        if isinstance(error, Message):
            error = error.text
        if isinstance(error, BaseException):
            error, error_type = str(error) or type(error).__name__, type(error).__name__
        timings: dict[str, float] = {} if elapsed_s is None else {"total": elapsed_s}
        if answer is not None:
            t = answer.timings
            timings = {"queue": t.queue, "preprocess": t.preprocess, "vision": t.vision, "prefill": t.prefill,
                       "decode": t.decode, "total": t.total}
        return cls(
            session_id=session_id, page=page, question=question, status=status, created_at=created_at,
            template_id=template_id, template_hash=template_hash, image_hashes=image_hashes,
            image_notes=image_notes, answer=text if text is not None else (answer.text if answer else ""),
            # the partial text of a stopped answer is cut short by definition (an API request cancelled in
            # the queue has no text at all, so nothing was cut)
            truncated=bool(answer and answer.truncated) or (status == EntryStatus.STOPPED and text is not None),
            input_tokens=answer.input_tokens if answer else 0,
            output_tokens=answer.output_tokens if answer else 0,
            tokens_per_s=answer.tokens_per_s if answer else 0.0, timings=timings,
            peak_memory_gb=dict(answer.peak_memory_gb) if answer else {}, error=error, error_type=error_type,
            verdict=verdict.status if verdict else "", verdict_detail=verdict.to_json() if verdict else {},
            stamp=stamp or {}, rerun_of=rerun_of, conversation_id=conversation_id, error_message=error_message,
            image_note_messages=image_note_messages,
        )


@dataclass(frozen=True)
class StoredImage:
    """An image as history keeps it, once per distinct upload: the bytes for re-runs and a thumbnail."""

    sha256: str
    data: bytes
    thumbnail: bytes  # JPEG
    width: int
    height: int


@dataclass(frozen=True)
class HistoryRow:
    """One line of the History list: an entry's summary, its texts cut to what the table shows."""

    id: int
    created_at: str
    session_id: str
    page: str
    template_id: str
    status: EntryStatus
    verdict: str
    question: str  # the first 120 characters
    answer: str  # the first 160
    truncated: bool
    output_tokens: int
    tokens_per_s: float
    total_s: float
    error: str  # the first 160
    rerun_of: int | None
    queue_s: float | None = None  # None: recorded before queue time was measured


@dataclass(frozen=True)
class HistoryListing:
    """One page of the History list: summary rows (newest first) and how many rows match in all."""

    rows: tuple[HistoryRow, ...]
    total: int
    total_is_capped: bool  # True when more than `total` rows match and counting stopped there
