"""The records history writes and reads: one query (HistoryEntry), one stored image, one page of a listing."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("answered", "failed", "stopped")


@dataclass(frozen=True)
class HistoryEntry:
    """One query as history keeps it: who asked, where, what, what came back or went wrong, and under what."""

    session_id: str
    page: str
    question: str
    status: str  # answered | failed | stopped (the reader went away before the end)
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
    timings: dict[str, float] = field(default_factory=dict)  # preprocess, vision, prefill, decode, total (s)
    peak_memory_gb: dict[str, float] = field(default_factory=dict)  # "cuda:0" → GB, "cpu" → RSS GB
    error: str = ""
    error_type: str = ""  # the LoupeError subclass, e.g. "QuestionError"
    verdict: str = ""  # moderation only: pass | needs_review | reject | unparsed
    verdict_detail: dict[str, Any] = field(default_factory=dict)  # Verdict.to_json()
    stamp: dict[str, Any] = field(default_factory=dict)  # ReproStamp.to_json()
    rerun_of: int | None = None

    @property
    def created(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.created_at)


@dataclass(frozen=True)
class StoredImage:
    """An image as history keeps it, once per distinct upload: the bytes for re-runs and a thumbnail."""

    sha256: str
    data: bytes
    thumbnail: bytes  # JPEG
    width: int
    height: int


@dataclass(frozen=True)
class HistoryListing:
    """One page of the History list: summary rows (newest first) and how many rows match in all."""

    rows: tuple[dict[str, Any], ...]
    total: int
    total_is_capped: bool  # True when more than `total` rows match and counting stopped there
