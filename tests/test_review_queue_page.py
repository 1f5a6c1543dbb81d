"""The Review queue at Label Studio's pace (issue #17 item 8), with AppTest: one decision per click (the buttons
the keys a, 1, 2, 3, n, p press), "Agree" preselected again after an unparsed item, the reviewer named, image
zoom, kappa with its sample size and a warning under 20, and words instead of an empty chart."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from core.analysis import review
from core.history import HistoryEntry, HistoryStore
from tests.app_pages import assert_no_exception, open_page

ITEMS = [{"item": "claims", "label": "Advertising claims", "result": "reject", "reason": "“全网最便宜”"},
         {"item": "price", "label": "Price shown", "result": "pass", "reason": "a price tag"},
         {"item": "brand", "label": "Brand", "result": "needs_review", "reason": "unclear"}]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), "navy").save(buffer, "PNG")
    return buffer.getvalue()


def _results(home: Path, statuses: list[str]) -> list[int]:
    """Moderation results as history has them: the first unparsed when asked, the rest with these verdicts."""
    from core.inputs.images import prepare

    store = HistoryStore(home / "history.sqlite3")
    data = _png()
    prepared = prepare(data)
    ids = []
    for n, status in enumerate(statuses):
        detail = {"status": status, "items": [] if status == "unparsed" else ITEMS}
        entry = HistoryEntry(session_id="abcdefabcdef", page="moderation", question=f"Check item {n}",
                             status="answered", answer=f"raw answer {n}", template_id="mod-checklist-en",
                             verdict=status, verdict_detail=detail, image_hashes=(prepared.sha256,))
        ids.append(store.record(entry, ((data, prepared),)).id)
    return ids


def _button(at, key: str):
    return at.button(key=key)


def test_one_click_decisions_move_through_the_queue(loupe_home: Path) -> None:
    ids = _results(loupe_home, ["unparsed", "reject", "pass", "needs_review"])
    store = HistoryStore(loupe_home / "history.sqlite3")
    at = open_page("review")
    assert any("Reviewing as" in c.value for c in at.caption)
    assert _button(at, "review-key-agree").disabled  # nothing to agree with on an unreadable answer
    assert at.radio(key="review-decision").value is None
    _button(at, "review-key-reject").click().run()  # key 3
    assert_no_exception(at)
    assert review.get(store, ids[0]).review.label == "reject"
    # The next item is parsed: "Agree" is preselected again, and one click agrees.
    assert any(f"#{ids[1]}" in c.value for c in at.caption)
    assert at.radio(key="review-decision").value == "agree"
    _button(at, "review-key-agree").click().run()  # key a
    assert review.get(store, ids[1]).review.agreed
    _button(at, "review-next").click().run()  # key n: skips ids[2]
    assert any(f"#{ids[3]}" in c.value for c in at.caption)
    _button(at, "review-previous").click().run()  # key p
    assert any(f"#{ids[2]}" in c.value for c in at.caption)
    _button(at, "review-key-needs_review").click().run()  # key 2
    saved = review.get(store, ids[2]).review
    assert saved.label == "needs_review" and not saved.agreed
    assert review.get(store, ids[3]).review is None


def test_the_keys_are_bound_and_the_image_zooms(loupe_home: Path) -> None:
    _results(loupe_home, ["reject"])
    at = open_page("review")
    scripts = [h.proto.body for h in at.get("html")]
    assert any("keydown" in s and "review-key-agree" in s for s in scripts)
    _button(at, "review-zoom").click().run()
    assert_no_exception(at)
    assert len(at.get("image")) == 2  # the thumbnail and, in the dialog, the image at full size


def test_checklist_items_are_colour_coded(loupe_home: Path) -> None:
    _results(loupe_home, ["reject"])
    at = open_page("review")
    table = at.table[0].value
    assert table["result"].tolist() == [":red-background[reject]", ":green-background[pass]",
                                        ":orange-background[needs review]"]


def test_kappa_says_its_sample_size_and_warns_under_20(loupe_home: Path) -> None:
    ids = _results(loupe_home, ["reject", "pass", "pass"])
    store = HistoryStore(loupe_home / "history.sqlite3")
    review.record(store, ids[0], agree=True)
    review.record(store, ids[1], agree=False, label="reject")
    review.record(store, ids[2], agree=True)
    at = open_page("review")
    assert any("3 reviews" in w.value and "20" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 1  # some agreement: there is something to chart


def test_no_empty_chart_when_nothing_agreed(loupe_home: Path) -> None:
    ids = _results(loupe_home, ["reject"])
    review.record(HistoryStore(loupe_home / "history.sqlite3"), ids[0], agree=False, label="pass")
    at = open_page("review")
    assert not at.get("plotly_chart")
    assert any("agreed on none" in c.value for c in at.caption)
