"""The moderation verdict parser reads what models really write and never raises."""
from __future__ import annotations

import json

import pytest

from core.inputs.moderation import UNPARSED, Verdict, normalise, parse_verdict
from core.inputs.templates import by_id

CHECKLIST = (("exposure", "暴露"), ("prohibited", "违禁品"), ("claims", "虚假宣传"), ("brand", "品牌滥用"))
ALL_PASS = {"exposure": ["pass", "无裸露"], "prohibited": ["pass", ""], "claims": ["pass", ""], "brand": ["pass", ""]}


def _results(verdict: Verdict) -> dict[str, str]:
    return {item.item: item.result for item in verdict.items}


def test_well_formed_json() -> None:
    text = json.dumps({"verdict": "reject", "items": {**ALL_PASS, "claims": ["reject", "含“最便宜”“第一”"]}},
                      ensure_ascii=False)
    verdict = parse_verdict(text, CHECKLIST)
    assert verdict.status == "reject" and verdict.model_verdict == "reject" and verdict.parsed
    assert _results(verdict) == {"exposure": "pass", "prohibited": "pass", "claims": "reject", "brand": "pass"}
    assert verdict.items[2].reason == "含“最便宜”“第一”" and verdict.items[2].label == "虚假宣传"
    assert verdict.notes == () and verdict.raw == text


def test_json_inside_prose_and_code_fences() -> None:
    body = json.dumps({"verdict": "pass", "items": ALL_PASS}, ensure_ascii=False)
    for text in (f"审核完成。结果如下：{body} 以上。", f"Here you go:\n```json\n{body}\n```\nThanks."):
        verdict = parse_verdict(text, CHECKLIST)
        assert verdict.status == "pass" and verdict.label == "pass"


def test_chinese_words_full_width_punctuation_and_trailing_commas() -> None:
    text = ('结论：{“verdict”：“不通过”，“items”：{“暴露”：“通过：无裸露”, "违禁品":"无", '
            '"claims": {"结果":"违规","理由":"写有最便宜"}, "brand": "需要人工复核",}}')
    verdict = parse_verdict(text, CHECKLIST)
    assert verdict.status == "reject"
    assert _results(verdict) == {"exposure": "pass", "prohibited": "pass", "claims": "reject", "brand": "needs_review"}
    assert verdict.items[0].reason == "无裸露" and verdict.items[2].reason == "写有最便宜"


def test_items_as_a_list_of_objects() -> None:
    text = json.dumps({"result": "needs review", "checklist": [
        {"item": "exposure", "status": "ok"}, {"name": "prohibited", "verdict": "pass"},
        {"id": "claims", "result": "review", "reason": "“第一” may be a ranking"}, {"id": "brand", "result": "pass"},
    ]})
    verdict = parse_verdict(text, CHECKLIST)
    assert verdict.status == "needs_review"
    assert _results(verdict)["claims"] == "needs_review" and verdict.items[2].reason == "“第一” may be a ranking"


def test_a_pass_next_to_a_rejected_item_is_a_reject() -> None:
    text = json.dumps({"verdict": "pass", "items": {**ALL_PASS, "brand": ["reject", "fake logo"]}})
    verdict = parse_verdict(text, CHECKLIST)
    assert verdict.status == "reject" and verdict.model_verdict == "pass"
    assert any("the model said pass, but its items say reject" in note for note in verdict.notes)


def test_an_unanswered_item_never_passes() -> None:
    items = {k: v for k, v in ALL_PASS.items() if k != "brand"}
    verdict = parse_verdict(json.dumps({"verdict": "pass", "items": items}), CHECKLIST)
    assert verdict.status == "needs_review" and _results(verdict)["brand"] == "missing"
    assert "not answered: 品牌滥用" in verdict.notes[0]


def test_no_overall_verdict_is_derived_from_the_items() -> None:
    verdict = parse_verdict(json.dumps({"items": ALL_PASS}), CHECKLIST)
    assert verdict.status == "pass" and verdict.model_verdict == ""
    assert "derived from the items" in verdict.notes[0]


def test_the_prompts_own_example_echoed_back_is_not_a_verdict() -> None:
    template = by_id("mod-checklist-zh")
    verdict = parse_verdict(template.fill(), template.output.checklist)
    assert verdict.status != "pass" and verdict.model_verdict == ""


@pytest.mark.parametrize("text", [
    "",
    "�d�出�为什么�什么的�q为什么 {{ [ } ::",
    "The image looks fine to me.",
    '{"verdict": 42, "items": "none"}',
    '{"verdict": "maybe"}',
    "[1, 2, 3]",
    "{" * 5000 + "}" * 10,
])
def test_malformed_output_is_unparsed_with_the_raw_text_kept(text: str) -> None:
    verdict = parse_verdict(text, CHECKLIST)
    assert verdict.status == UNPARSED and verdict.label == "unparsed — needs review" and not verdict.parsed
    assert verdict.raw == text
    assert [i.result for i in verdict.items] == ["missing"] * 4


def test_non_text_input_does_not_raise() -> None:
    assert parse_verdict(None, CHECKLIST).status == UNPARSED  # type: ignore[arg-type]


def test_round_trip_through_json_for_history() -> None:
    verdict = parse_verdict(json.dumps({"verdict": "reject", "items": ALL_PASS}), CHECKLIST)
    again = Verdict.from_json(json.loads(json.dumps(verdict.to_json())), verdict.raw)
    assert again == verdict


@pytest.mark.parametrize(("word", "status"), [
    ("通过", "pass"), ("不通过", "reject"), ("无违规", "pass"), ("违规", "reject"), ("需复核", "needs_review"),
    ("PASS.", "pass"), ("Rejected", "reject"), ("needs_review", "needs_review"), ("pass|reject", None), ("?", None),
])
def test_normalise(word: str, status: str | None) -> None:
    assert normalise(word) == status


def test_the_demo_models_noise_is_unparsed(engine) -> None:
    template = by_id("mod-claims-en")
    from core.inputs.samples import by_id as sample

    answer = engine.ask([sample("product-router").read()], template.fill(),
                        engine.default_generation(max_new_tokens=24)).collect()
    verdict = parse_verdict(answer.text, template.output.checklist)
    assert verdict.status == UNPARSED and verdict.raw == answer.text
