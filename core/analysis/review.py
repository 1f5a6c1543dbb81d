"""The review queue: every moderation result in history (moderation page, compare runs, batches), and what the
analysts said about it. Reviews live in the history database (table `reviews`), one per result.

Decisions:
- A review either agrees with the model's verdict or overrides it with a label (pass, needs_review,
  reject), a reason (one of REASONS or the analyst's own words) and a note. An override naming the
  model's own verdict counts as agreement. An "unparsed" verdict cannot be agreed with: its reviewer
  must choose a label. Reviewing again replaces the earlier review (the latest word counts).
- Agreement rate = agreed / reviewed, per template and per (template, model verdict).
- Cohen's kappa between the model and the reviewers, per template, over the labels both used
  ("unparsed" is a label of the model's that no reviewer gives, so it always counts as disagreement).
  It is None (undefined) when there are no reviews, or when both sides used one and the same label
  for everything, where chance agreement is already 1.
- Dates filter on the day the model answered (UTC), as the History page does.
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from core.errors import HistoryError, ReviewError
from core.history import HistoryStore, now_utc, reviews
from core.history.reviews import Review, ReviewedResult, ReviewFilter
from core.inputs.moderation import STATUSES, UNPARSED, Verdict
from core.messages import MessageText

LABELS = STATUSES  # what a reviewer may decide: pass | needs_review | reject
NOT_MODERATION = MessageText("review.not_moderation", "History entry #{entry_id} is not a moderation result.")
NOTHING_TO_AGREE = MessageText("review.nothing_to_agree", "The model's answer could not be read, so there is no verdict "
                                                          "to agree with: choose pass, needs review or reject.")
CHOOSE_LABEL = MessageText("review.choose_label", "Choose a label to override with: {labels}.")
REASONS = ("missed a violation", "flagged a compliant image", "wrong severity", "model output unreadable",
           "wrong checklist item", "other")
PAGE_SIZE = 20
EVERY_RESULT = ReviewFilter()  # filters nothing
__all__ = ["LABELS", "PAGE_SIZE", "REASONS", "Agreement", "Review", "ReviewFilter", "ReviewItem", "ReviewStats",
           "clear", "cohen_kappa", "export_csv", "export_json", "export_rows", "get", "queue", "record", "stats",
           "template_ids"]


@dataclass(frozen=True)
class ReviewItem:
    """One result in the queue: its history row's verdict (items, reasons, raw output), image and review."""

    query_id: int
    created_at: str
    page: str
    template_id: str
    question: str
    image_sha256: str
    verdict: Verdict  # .raw is the model's whole answer
    review: Review | None


@dataclass(frozen=True)
class Agreement:
    """Reviews of one template (and, if set, one model verdict): how many, how many agreed, rate, kappa."""

    template_id: str
    verdict: str  # "" for the whole template
    reviewed: int
    agreed: int
    kappa: float | None = None  # the whole template only

    @property
    def rate(self) -> float:
        return self.agreed / self.reviewed if self.reviewed else 0.0


@dataclass(frozen=True)
class ReviewStats:
    """Agreement per template and per (template, verdict), and how often each override reason was given."""

    templates: tuple[Agreement, ...]
    verdicts: tuple[Agreement, ...]
    reasons: tuple[tuple[str, int], ...]  # most frequent first


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters over the same items: (observed − chance agreement) / (1 − chance)."""
    n = len(first)
    if n == 0 or n != len(second):
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    counts_a, counts_b = Counter(first), Counter(second)
    chance = sum(counts_a[label] * counts_b[label] for label in counts_a) / (n * n)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def _item(found: ReviewedResult) -> ReviewItem:
    entry = found.entry
    assert entry.id is not None  # read back from history
    detail = entry.verdict_detail or {"status": entry.verdict}  # rows written before details were kept
    return ReviewItem(entry.id, entry.created_at, entry.page, entry.template_id, entry.question,
                      entry.image_hashes[0] if entry.image_hashes else "", Verdict.from_json(detail, entry.answer),
                      found.review)


def queue(store: HistoryStore, f: ReviewFilter = EVERY_RESULT, *, page: int = 1,
          page_size: int = PAGE_SIZE) -> tuple[list[ReviewItem], int]:
    """One page (1-based) of matching results, oldest first (a queue is worked through in order), and the count."""
    found, total = reviews.results(store, f, page=page, page_size=page_size)
    return [_item(r) for r in found], total


def template_ids(store: HistoryStore) -> list[str]:
    """Templates that have moderation results, for the template filter."""
    return reviews.template_ids(store)


def get(store: HistoryStore, query_id: int) -> ReviewItem:
    found = reviews.result(store, query_id)
    if found is None:
        raise HistoryError(NOT_MODERATION(entry_id=query_id))
    return _item(found)


def record(store: HistoryStore, query_id: int, *, agree: bool, label: str = "", reason: str = "", note: str = "",
           reviewer: str = "") -> Review:
    """Save (or replace) the review of one result; a ReviewError says what is missing."""
    verdict = get(store, query_id).verdict.status
    if agree:
        if verdict == UNPARSED:
            raise ReviewError(NOTHING_TO_AGREE())
        label = verdict
    elif label not in LABELS:
        raise ReviewError(CHOOSE_LABEL(labels=", ".join(LABELS)))
    agreed = label == verdict
    review = Review(query_id, verdict, label, agreed, "" if agreed else reason.strip(), note.strip(),
                    reviewer.strip(), now_utc())
    reviews.save(store, review)
    return review


def clear(store: HistoryStore, query_id: int) -> None:
    """Take a review back: the result is unreviewed again."""
    reviews.clear(store, query_id)


def stats(store: HistoryStore, f: ReviewFilter = EVERY_RESULT) -> ReviewStats:
    done = [(r.entry.template_id, r.review) for r in reviews.reviewed(store, f) if r.review is not None]
    by_template: dict[str, list[Review]] = {}
    for template_id, review in done:
        by_template.setdefault(template_id, []).append(review)
    templates, verdicts = [], []
    for template_id, group in sorted(by_template.items()):
        kappa = cohen_kappa([r.model_verdict for r in group], [r.label for r in group])
        templates.append(Agreement(template_id, "", len(group), sum(r.agreed for r in group), kappa))
        for verdict in (*LABELS, UNPARSED):
            subset = [r for r in group if r.model_verdict == verdict]
            if subset:
                verdicts.append(Agreement(template_id, verdict, len(subset), sum(r.agreed for r in subset)))
    reasons = Counter(r.reason or "(no reason given)" for _, r in done if not r.agreed)
    return ReviewStats(tuple(templates), tuple(verdicts), tuple(reasons.most_common()))


EXPORT_COLUMNS = ("query_id", "created_at", "page", "template_id", "question", "image_sha256", "model_verdict",
                  "label", "agreed", "reason", "note", "reviewer", "reviewed_at", "items", "raw_answer")


def export_rows(store: HistoryStore, f: ReviewFilter = EVERY_RESULT) -> list[dict[str, Any]]:
    """Every reviewed result matching the filter, oldest first, with its checklist items and raw answer."""
    found = []
    for result in reviews.reviewed(store, f):
        item = _item(result)
        assert item.review is not None
        review = asdict(item.review)
        found.append({**{k: review[k] for k in ("query_id", "model_verdict", "label", "agreed", "reason", "note",
                                                "reviewer", "reviewed_at")},
                      "created_at": item.created_at, "page": item.page, "template_id": item.template_id,
                      "question": item.question, "image_sha256": item.image_sha256,
                      "items": [asdict(i) for i in item.verdict.items], "raw_answer": item.verdict.raw})
    return [{k: row[k] for k in EXPORT_COLUMNS} for row in found]


def export_csv(store: HistoryStore, f: ReviewFilter = EVERY_RESULT) -> str:
    """CSV, one row per reviewed result; the checklist items as JSON text in their cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS)
    writer.writeheader()
    for row in export_rows(store, f):
        writer.writerow({**row, "items": json.dumps(row["items"], ensure_ascii=False)})
    return buffer.getvalue()


def export_json(store: HistoryStore, f: ReviewFilter = EVERY_RESULT) -> str:
    return json.dumps(export_rows(store, f), ensure_ascii=False, indent=1)
