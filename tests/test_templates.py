"""Templates are data: the shipped ones are valid and fit the question limit; malformed ones are refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import TemplateError
from core.inputs.templates import SCENARIOS, by_id, for_scenario, load_file, load_templates


def test_every_scenario_ships_templates_in_chinese_and_english() -> None:
    templates = load_templates()
    for scenario in SCENARIOS:
        languages = {t.language for t in templates if t.scenario == scenario}
        assert languages == {"zh", "en"}, scenario


def test_shipped_templates_fill_with_defaults_within_the_question_limit() -> None:
    for template in load_templates():
        text = template.fill(max_chars=200)
        assert len(text) <= 200, template.id
        assert not any("{" + field.name + "}" in text for field in template.fields)


def test_article_patterns_are_shipped() -> None:
    assert by_id("doc-cell-zh").fill() == "图中表格第三列第一行的数值是多少？"
    assert by_id("edu-conditions-zh").fill() == "这道题的已知条件和求解目标分别是什么？请分点说明。"
    assert by_id("general-location-zh").fill({"thing": "签名", "place": "右下角"}).startswith("签名位于右下角吗？")
    assert by_id("general-list-zh").fill({"count": "4", "things": "图标名称"}) == "请按从左到右顺序列出4个图标名称。"


def test_moderation_templates_name_every_checklist_item_and_show_literal_json() -> None:
    for template in for_scenario("moderation"):
        assert template.output is not None
        text = template.fill()
        for item in template.output.item_ids:
            assert item in text
        assert '{"verdict":"pass|needs_review|reject"' in text  # {{ }} became literal braces


def test_fill_replaces_fields_and_refuses_blank_ones() -> None:
    template = by_id("doc-cell-en")
    assert template.fill({"row": "2", "column": "4"}).startswith("What is the value in row 2, column 4")
    with pytest.raises(TemplateError, match="Fill in “Row”"):
        template.fill({"row": "  "})


def test_fill_inserts_braces_in_values_literally() -> None:
    assert by_id("general-count-en").fill({"object": "{row}"}).startswith("How many {row} are")


def test_fill_over_the_limit_says_by_how_much() -> None:
    template = by_id("general-count-zh")
    expected = len(template.fill({"object": "人"})) - 1 + 200
    with pytest.raises(TemplateError, match=f"is {expected} characters long; the limit is 200"):
        template.fill({"object": "人" * 200}, max_chars=200)


def test_text_hash_follows_the_prompt_text() -> None:
    a, b = by_id("doc-cell-zh"), by_id("doc-cell-en")
    assert len(a.text_hash) == 64 and a.text_hash != b.text_hash
    assert a.text_hash == by_id("doc-cell-zh").text_hash


def _write(folder: Path, body: str, name: str = "t.toml") -> Path:
    path = folder / name
    path.write_text(body, encoding="utf-8")
    return path


GOOD = """
scenario = "documents"
[[templates]]
id = "x-one"
title = "One"
language = "en"
prompt = "What is the {attribute}?"
fields = [{ name = "attribute", label = "Attribute", default = "title" }]
"""


@pytest.mark.parametrize(("body", "message"), [
    ("scenario = 'documents'\n[[templates]\n", "cannot be read as TOML"),
    ("scenario = 'cooking'\n[[templates]]\nid='a1'", "`scenario` must be one of"),
    ("scenario = 'documents'\n", "no \\[\\[templates\\]\\] entries"),
    (GOOD.replace('id = "x-one"', 'id = "X One"'), "`id` must be lower-case"),
    (GOOD.replace('language = "en"', 'language = "fr"'), "`language` must be one of zh, en"),
    (GOOD.replace('title = "One"', 'title = ""'), "`title` is required"),
    (GOOD.replace("{attribute}?", "{attribute} of {object}?"), "placeholders .* must match one to one"),
    (GOOD.replace("{attribute}?", "{attribute!r}?"), "must be a plain name"),
    (GOOD.replace("{attribute}?", "{attribute:>9}?"), "must be a plain name"),
    (GOOD.replace("{attribute}?", "{attribute?"), "unbalanced braces"),
    (GOOD.replace('title = "One"', 'title = "One"\ncolour = "red"'), "unknown key\\(s\\) colour"),
    (GOOD.replace('default = "title"', 'default = "x", choices = ["a", "b"]'), "is not one of its choices"),
    (GOOD.replace('scenario = "documents"', 'scenario = "moderation"'), "needs an \\[templates.output\\] checklist"),
    (GOOD + '[templates.output]\nchecklist = { brand = "Brand" }\n', "never names checklist item\\(s\\) brand"),
])
def test_malformed_templates_are_refused_with_the_reason(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        load_file(_write(tmp_path, body))


def test_ids_are_unique_across_files(tmp_path: Path) -> None:
    _write(tmp_path, GOOD, "a.toml")
    _write(tmp_path, GOOD, "b.toml")
    with pytest.raises(TemplateError, match="used in both a.toml and b.toml"):
        load_templates(tmp_path)


def test_a_valid_file_loads_with_its_fields(tmp_path: Path) -> None:
    (template,) = load_file(_write(tmp_path, GOOD))
    assert template.scenario == "documents" and template.source == "t.toml"
    assert template.fields[0].label == "Attribute" and template.defaults() == {"attribute": "title"}
    assert template.fill() == "What is the title?"
