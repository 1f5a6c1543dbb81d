"""Read a moderation verdict back out of whatever the model wrote, never raising.

The moderation templates ask for JSON: `{"verdict": "pass|needs_review|reject", "items": {"<item>":
["<result>", "<reason>"], ...}}`. Models wrap it in prose or code fences, use Chinese words ("通过",
"不通过", "需复核"), full-width punctuation, trailing commas, or echo the prompt's `...`; all of that is
read. Anything that still cannot be read becomes status "unparsed" (shown as "unparsed — needs
review") with the raw text kept, so a human looks at it.

Decisions (a verdict must never look safer than the evidence):
- the overall status is the worst of the model's overall verdict and its per-item results
  (pass < needs_review < reject); a "pass" next to a rejected item is a reject;
- a checklist item the model did not answer counts as needs_review, so an incomplete check never passes;
- with no overall verdict but readable items, the verdict is derived from the items (noted).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from core.statuses import VerdictStatus

PASS, NEEDS_REVIEW, REJECT, UNPARSED = (VerdictStatus.PASS, VerdictStatus.NEEDS_REVIEW, VerdictStatus.REJECT,
                                       VerdictStatus.UNPARSED)
STATUSES = (PASS, NEEDS_REVIEW, REJECT)  # what a model (or a reviewer) can decide, safest first
MISSING = "missing"  # a checklist item's result when the model did not answer it (not a verdict)
LABELS = {PASS: "pass", NEEDS_REVIEW: "needs review", REJECT: "reject", UNPARSED: "unparsed — needs review",
          MISSING: "not answered — needs review"}
_RANK = {PASS: 0, NEEDS_REVIEW: 1, MISSING: 1, REJECT: 2}

# Exact words first (after lower-casing and stripping), then substrings in this order: negated
# violations before "违规", "不通过" before "通过".
_EXACT = {
    "pass": PASS, "passed": PASS, "ok": PASS, "compliant": PASS, "approve": PASS, "approved": PASS,
    "none": PASS, "clean": PASS, "通过": PASS, "合规": PASS, "无": PASS, "正常": PASS, "符合": PASS,
    "needs_review": NEEDS_REVIEW, "needs review": NEEDS_REVIEW, "need_review": NEEDS_REVIEW,
    "review": NEEDS_REVIEW, "uncertain": NEEDS_REVIEW, "unsure": NEEDS_REVIEW, "manual": NEEDS_REVIEW,
    "reject": REJECT, "rejected": REJECT, "fail": REJECT, "failed": REJECT, "violation": REJECT,
    "block": REJECT, "拒绝": REJECT, "驳回": REJECT,
}
_SUBSTRINGS = (
    ("无违规", PASS), ("未违规", PASS), ("没有违规", PASS), ("未发现", PASS), ("不违规", PASS),
    ("不通过", REJECT), ("不合规", REJECT), ("违规", REJECT), ("拒绝", REJECT), ("reject", REJECT),
    ("复核", NEEDS_REVIEW), ("待审", NEEDS_REVIEW), ("人工", NEEDS_REVIEW), ("存疑", NEEDS_REVIEW),
    ("不确定", NEEDS_REVIEW), ("review", NEEDS_REVIEW),
    ("通过", PASS), ("合规", PASS), ("pass", PASS),
)
_VERDICT_KEYS = ("verdict", "overall", "decision", "result", "status", "结论", "审核结论", "总体结论", "判断")
_ITEMS_KEYS = ("items", "checklist", "checks", "details", "检查项", "明细", "逐项")
_RESULT_KEYS = ("result", "verdict", "status", "decision", "结论", "结果")
_REASON_KEYS = ("reason", "reasons", "why", "note", "explanation", "理由", "原因", "说明")
_NAME_KEYS = ("id", "item", "name", "key", "项目", "检查项")
_FULL_WIDTH: dict[str, str | int | None] = {"“": '"', "”": '"', "：": ":", "，": ",", "｛": "{", "｝": "}"}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


@dataclass(frozen=True)
class ChecklistResult:
    """The model's answer for one checklist item: a VerdictStatus other than unparsed, or MISSING; and why."""

    item: str
    label: str
    result: str
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    """A moderation verdict as Loupe reads it, with the model's raw text kept for the reviewer."""

    status: VerdictStatus
    items: tuple[ChecklistResult, ...]
    raw: str
    model_verdict: str = ""  # the overall verdict the model wrote, normalised ("" if none)
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return LABELS[self.status]

    @property
    def parsed(self) -> bool:
        return self.status != UNPARSED

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "model_verdict": self.model_verdict, "notes": list(self.notes),
                "items": [asdict(i) for i in self.items]}

    @classmethod
    def from_json(cls, data: dict[str, Any], raw: str) -> Verdict:
        return cls(status=VerdictStatus(data["status"]), items=tuple(ChecklistResult(**i) for i in data.get("items", [])),
                   raw=raw, model_verdict=data.get("model_verdict", ""), notes=tuple(data.get("notes", [])))


def normalise(word: object) -> VerdictStatus | None:
    """'pass', 'needs_review' or 'reject' for the many ways a model says them; None if unrecognised."""
    if not isinstance(word, str):
        return None
    text = word.strip().strip("\"'“”。.!！").lower()
    alternatives = {normalise(part) for part in re.split(r"[|/]", text)} if re.search(r"[|/]", text) else set()
    if len(alternatives) > 1:  # "pass|needs_review|reject": the prompt's example echoed back, not a verdict
        return None
    if text in _EXACT:
        return _EXACT[text]
    first = re.split(r"[\s,:;，：；、（(|/—-]+", text, maxsplit=1)[0]
    if first in _EXACT:
        return _EXACT[first]
    return next((status for part, status in _SUBSTRINGS if part in text), None)


def _repaired(text: str) -> str:
    text = text.translate(str.maketrans(_FULL_WIDTH))
    text = re.sub(r",?\s*(\.\.\.|…)+\s*(?=[}\]])", "", text)  # the prompt's example ends in ",..."
    return re.sub(r",\s*(?=[}\]])", "", text)  # trailing commas


def _json_objects(text: str) -> Iterator[dict[str, object]]:
    """Every JSON object found in the text: fenced blocks first, then any '{' that starts one."""
    decoder = json.JSONDecoder()
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for source in sources:
        for candidate in dict.fromkeys((source, _repaired(source))):
            for count, match in enumerate(re.finditer(r"\{", candidate)):
                if count >= 200:
                    break
                try:
                    value, _end = decoder.raw_decode(candidate, match.start())
                except ValueError:
                    continue
                if isinstance(value, dict):
                    yield value


def _pick(mapping: Mapping[str, object], keys: Sequence[str]) -> object:
    lowered = {str(k).strip().lower(): v for k, v in mapping.items()}
    return next((lowered[k] for k in keys if k in lowered), None)


def _item_value(value: object) -> tuple[VerdictStatus | None, str]:
    """(result, reason) from ["pass", "why"], {"result": ..., "reason": ...}, or "pass: why"."""
    if isinstance(value, (list, tuple)) and value:
        return normalise(value[0]), " ".join(str(v) for v in value[1:])
    if isinstance(value, dict):
        reason = _pick(value, _REASON_KEYS)
        reason = "; ".join(map(str, reason)) if isinstance(reason, list) else str(reason or "")
        return normalise(_pick(value, _RESULT_KEYS)), reason
    if isinstance(value, str):
        parts = re.split(r"\s*[:：—,，;；]\s*|\s+-\s+", value.strip(), maxsplit=1)
        return normalise(parts[0]) or normalise(value), parts[1] if len(parts) > 1 else ""
    if isinstance(value, bool):  # {"exposure": false} reads as "no problem found"? too ambiguous
        return None, str(value)
    return None, ""


def _items(raw_items: object) -> dict[str, tuple[VerdictStatus | None, str]]:
    """Item name (lower case) → (result, reason), whether items came as a mapping or a list."""
    found: dict[str, tuple[VerdictStatus | None, str]] = {}
    if isinstance(raw_items, dict):
        for name, value in raw_items.items():
            found[str(name).strip().lower()] = _item_value(value)
    elif isinstance(raw_items, list):
        for entry in raw_items:
            if isinstance(entry, dict):
                name = _pick(entry, _NAME_KEYS)
                if name is not None:
                    found[str(name).strip().lower()] = _item_value(entry)
    return found


def _match(item: str, label: str, answers: dict[str, tuple[VerdictStatus | None, str]],
           ) -> tuple[VerdictStatus | None, str] | None:
    for key in (item.lower(), label.lower()):
        if key in answers:
            return answers[key]
    return next((v for k, v in answers.items() if item.lower() in k or (label and label.lower() in k)), None)


def _from_object(data: dict[str, object], checklist: Sequence[tuple[str, str]], raw: str) -> Verdict | None:
    model_verdict = normalise(_pick(data, _VERDICT_KEYS))
    raw_items = _pick(data, _ITEMS_KEYS)
    if raw_items is None:  # items written at the top level: {"verdict": ..., "exposure": [...]}
        raw_items = {k: v for k, v in data.items() if str(k).lower() not in _VERDICT_KEYS}
    answers = _items(raw_items)
    results: list[ChecklistResult] = []
    notes: list[str] = []
    for item, label in checklist:
        result, reason = _match(item, label, answers) or (None, "")
        results.append(ChecklistResult(item, label, result or MISSING, reason))
    if not checklist:  # no checklist given: keep whatever items were readable
        results = [ChecklistResult(k, k, r, why) for k, (r, why) in answers.items() if r]
    readable = [r for r in results if r.result != MISSING]
    if model_verdict is None and not readable:
        return None
    missing = [r.label or r.item for r in results if r.result == MISSING]
    if missing:
        notes.append(f"not answered: {', '.join(missing)} (counted as needs review)")
    if model_verdict is None:
        notes.append("no overall verdict given; derived from the items")
    ranks = [_RANK[r.result] for r in results] + ([_RANK[model_verdict]] if model_verdict else [])
    status = STATUSES[max(ranks)]
    if model_verdict and status != model_verdict:
        notes.append(f"the model said {LABELS[model_verdict]}, but its items say {LABELS[status]}")
    return Verdict(status, tuple(results), raw, model_verdict or "", tuple(notes))


def parse_verdict(text: str, checklist: Sequence[tuple[str, str]] = ()) -> Verdict:
    """The verdict in `text` for the given checklist ((item id, label), ...); never raises."""
    raw = text if isinstance(text, str) else str(text)
    try:
        for data in _json_objects(raw):
            verdict = _from_object(data, checklist, raw)
            if verdict is not None:
                return verdict
    except Exception as exc:  # noqa: BLE001 - a parser bug must not cost the analyst the raw answer
        return _unparsed(raw, checklist, f"parser error: {type(exc).__name__}")
    return _unparsed(raw, checklist, "no JSON verdict found in the answer")


def _unparsed(raw: str, checklist: Sequence[tuple[str, str]], why: str) -> Verdict:
    items = tuple(ChecklistResult(item, label, MISSING) for item, label in checklist)
    return Verdict(UNPARSED, items, raw, "", (why,))
