"""The review queue: filters, agree/override, agreement and Cohen's kappa per template, reasons, exports."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from PIL import Image

from core.analysis import compare, review
from core.analysis.review import ReviewFilter, cohen_kappa
from core.errors import HistoryError, ReviewError
from core.history import HistoryEntry, HistoryStore
from core.inputs.moderation import parse_verdict
from core.inputs.templates import by_id
from core.serving.recorded_ask import ImageUpload
from tests.image_factory import encode

CHECKLIST = by_id("mod-checklist-en").output.checklist
ITEMS = [item for item, _label in CHECKLIST]


def _answer(verdict: str, reject_item: str = "") -> str:
    items = {item: ["reject" if item == reject_item else "pass", "shown on the box" if item == reject_item else ""]
             for item in ITEMS}
    return "Result:\n```json\n" + json.dumps({"verdict": verdict, "items": items}) + "\n```"


@pytest.fixture
def store(loupe_home) -> HistoryStore:
    return HistoryStore(loupe_home / "history.sqlite3")


def _result(store: HistoryStore, answer: str, *, template: str = "mod-checklist-en", page: str = "moderation",
            created_at: str = "") -> int:
    checklist = by_id(template).output.checklist
    verdict = parse_verdict(answer, checklist)
    entry = HistoryEntry(session_id="s", page=page, question="Check this product photo.", status="answered",
                         template_id=template, answer=answer, verdict=verdict.status, verdict_detail=verdict.to_json(),
                         created_at=created_at)
    return store.record(entry).id


def test_cohen_kappa_matches_the_textbook_values() -> None:
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 -> kappa 0.4
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert cohen_kappa(["pass"] * 4, ["pass"] * 4) is None  # chance agreement is already 1: undefined
    assert cohen_kappa([], []) is None


def test_agree_override_and_the_rules_for_unreadable_verdicts(store) -> None:
    passed = _result(store, _answer("pass"))
    rejected = _result(store, _answer("reject", ITEMS[0]))
    noise = _result(store, "I cannot tell, sorry.")
    assert review.get(store, rejected).verdict.status == "reject"
    assert review.get(store, rejected).verdict.items[0].reason == "shown on the box"
    agreed = review.record(store, passed, agree=True, note="  fine  ")
    assert agreed.agreed and agreed.label == "pass" and agreed.note == "fine"
    overridden = review.record(store, rejected, agree=False, label="pass", reason="flagged a compliant image")
    assert not overridden.agreed and overridden.model_verdict == "reject"
    with pytest.raises(ReviewError, match="could not be read"):
        review.record(store, noise, agree=True)
    with pytest.raises(ReviewError, match="Choose a label"):
        review.record(store, noise, agree=False, label="maybe")
    assert review.record(store, noise, agree=False, label="needs_review", reason="model output unreadable").label == \
        "needs_review"
    again = review.record(store, rejected, agree=False, label="reject", reason="ignored")  # the latest word counts
    assert again.agreed and again.reason == ""
    with pytest.raises(HistoryError):
        review.get(store, store.record(HistoryEntry(session_id="s", page="playground", question="q",
                                                    status="answered")).id)
    review.clear(store, passed)
    assert review.get(store, passed).review is None
    reopened = HistoryStore(store.path)  # a restart: reviews are in the database
    assert review.get(reopened, rejected).review.label == "reject"


def test_filters_by_verdict_reviewed_template_and_date(store) -> None:
    old = _result(store, _answer("pass"), created_at="2026-01-05T10:00:00.000+00:00")
    new_reject = _result(store, _answer("reject", ITEMS[1]))
    claims = _result(store, "not json", template="mod-claims-en")
    store.record(HistoryEntry(session_id="s", page="playground", question="q", status="answered", answer="hi"))
    review.record(store, new_reject, agree=True)
    ids = lambda f: [i.query_id for i in review.queue(store, f)[0]]  # noqa: E731
    assert ids(ReviewFilter()) == [old, new_reject, claims]  # moderation results only, oldest first
    assert review.queue(store)[1] == 3
    assert ids(ReviewFilter(verdicts=("reject", "unparsed"))) == [new_reject, claims]
    assert ids(ReviewFilter(reviewed=False)) == [old, claims] and ids(ReviewFilter(reviewed=True)) == [new_reject]
    assert ids(ReviewFilter(template_id="mod-claims-en")) == [claims]
    assert ids(ReviewFilter(date_to=dt.date(2026, 1, 5))) == [old]
    assert ids(ReviewFilter(date_from=dt.date(2026, 1, 6))) == [new_reject, claims]
    assert review.template_ids(store) == ["mod-checklist-en", "mod-claims-en"]
    page_two, total = review.queue(store, page=2, page_size=2)
    assert [i.query_id for i in page_two] == [claims] and total == 3


def test_agreement_kappa_and_override_reasons_per_template(store) -> None:
    plan = [("pass", True, ""), ("pass", True, ""), ("reject", True, ""), ("reject", False, "flagged a compliant image"),
            ("pass", False, "missed a violation"), ("needs_review", False, "missed a violation")]
    model, human = [], []
    for verdict, agree, reason in plan:
        query_id = _result(store, _answer(verdict, ITEMS[0] if verdict == "reject" else ""))
        label = verdict if agree else {"pass": "reject", "reject": "pass", "needs_review": "reject"}[verdict]
        review.record(store, query_id, agree=agree, label=label, reason=reason)
        model.append(verdict)
        human.append(label)
    review.record(store, _result(store, "???", template="mod-claims-en"), agree=False, label="pass")
    stats = review.stats(store)
    checklist = next(a for a in stats.templates if a.template_id == "mod-checklist-en")
    assert (checklist.reviewed, checklist.agreed) == (6, 3) and checklist.rate == pytest.approx(0.5)
    assert checklist.kappa == pytest.approx(cohen_kappa(model, human))
    claims = next(a for a in stats.templates if a.template_id == "mod-claims-en")
    assert claims.reviewed == 1 and claims.agreed == 0 and claims.kappa == pytest.approx(0.0)
    by_verdict = {(a.template_id, a.verdict): (a.reviewed, a.agreed) for a in stats.verdicts}
    assert by_verdict[("mod-checklist-en", "pass")] == (3, 2)
    assert by_verdict[("mod-checklist-en", "reject")] == (2, 1)
    assert by_verdict[("mod-claims-en", "unparsed")] == (1, 0)
    assert stats.reasons == (("missed a violation", 2), ("flagged a compliant image", 1), ("(no reason given)", 1))
    only_claims = review.stats(store, ReviewFilter(template_id="mod-claims-en"))
    assert [a.template_id for a in only_claims.templates] == ["mod-claims-en"]


def test_exports_hold_reviewed_items_only(store) -> None:
    reviewed = _result(store, _answer("reject", ITEMS[2]))
    _result(store, _answer("pass"))
    review.record(store, reviewed, agree=False, label="needs_review", reason="wrong severity", note='says "50% off"')
    rows = list(csv.DictReader(io.StringIO(review.export_csv(store))))
    assert len(rows) == 1 and rows[0]["query_id"] == str(reviewed) and rows[0]["label"] == "needs_review"
    assert rows[0]["note"] == 'says "50% off"' and json.loads(rows[0]["items"])[2]["result"] == "reject"
    data = json.loads(review.export_json(store))
    assert [d["query_id"] for d in data] == [reviewed] and data[0]["raw_answer"].startswith("Result:")
    assert data[0]["model_verdict"] == "reject" and data[0]["agreed"] is False


def test_compare_runs_feed_the_queue(engine, store) -> None:
    image = ImageUpload(encode(Image.new("RGB", (64, 64), "white"), "PNG"), "w.png")
    run = compare.compare(engine, store, [image], [compare.template_column(by_id("mod-claims-zh")),
                                                   compare.template_column(by_id("mod-checklist-zh"))],
                          generation=engine.default_generation(max_new_tokens=6))
    items, total = review.queue(store, ReviewFilter(reviewed=False))
    assert total == 2 and {i.query_id for i in items} == {c.entry.id for c in run.cells}
    assert all(i.page == "compare" and i.verdict.raw == c.entry.answer for i, c in zip(items, run.cells, strict=True))
