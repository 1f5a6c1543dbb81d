"""The interface in Chinese and English: the two tables, the lookup, the switch, times in the analyst's zone."""
from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.analysis.review import REASONS
from core.inputs.moderation import LABELS
from core.statuses import BatchItemStatus, BatchStatus, EntryStatus, TraceOutcome, VerdictStatus
from dashboard.widgets.display_time import display_time
from dashboard.widgets.interface_language import (
    ENGLISH,
    LANGUAGES,
    Markup,
    MissingInterfaceText,
    field_names,
    interface_text,
    table,
)
from dashboard.widgets.memory_chart import STAGE_COLOURS, load_figure, memory_figure
from tests.app_pages import APP, assert_no_exception

ROOT = Path(__file__).resolve().parent.parent
# Words that read the same in both languages (names of formats and units).
SAME_IN_BOTH = {"batch.csv", "batch.json", "chart.rss", "chart.cpu"}
CJK = re.compile(r"[\u3400-\u9fff]")
# Every "section.key" literal in the dashboard's code whose section is one of the tables' (t("history.title"),
# and keys kept in dicts for a format_func).
KEY_LITERAL = re.compile(r"""["']([a-z_]+)\.([a-z_0-9]+)["']""")


def test_both_tables_have_the_same_keys_and_the_same_fields() -> None:
    en, zh = table("en"), table("zh")
    assert set(en) == set(zh), (sorted(set(en) - set(zh)), sorted(set(zh) - set(en)))
    for key in en:
        assert field_names(en[key]) == field_names(zh[key]), key
        assert all(name.split(":")[0].isidentifier() for name in field_names(en[key])), key


def test_every_chinese_text_is_chinese() -> None:
    zh = table("zh")
    untranslated = [k for k, v in zh.items() if k not in SAME_IN_BOTH and not CJK.search(v)]
    assert not untranslated


def test_every_key_the_code_names_is_in_both_tables() -> None:
    sections = {key.split(".")[0] for key in table(ENGLISH)}
    named = {f"{section}.{name}" for folder in ("dashboard", "pages") for path in (ROOT / folder).rglob("*.py")
             for section, name in KEY_LITERAL.findall(path.read_text(encoding="utf-8")) if section in sections}
    assert len(named) > 100  # the pattern does find the lookups
    for language in LANGUAGES:
        assert not named - set(table(language)), (language, sorted(named - set(table(language))))


def test_every_stored_word_has_a_translation() -> None:
    """Verdicts, outcomes, override reasons and stage names are looked up from stored values, not literals."""
    for language in LANGUAGES:
        words = table(language)
        assert {f"verdict.{s}" for s in [*VerdictStatus, *LABELS]} <= set(words)
        assert {f"outcome.{s}" for s in [*EntryStatus, *BatchStatus, *BatchItemStatus, *TraceOutcome]} <= set(words)
        assert {"override_reason." + re.sub(r"[^a-z0-9]+", "_", r).strip("_") for r in REASONS} <= set(words)
        assert {f"stage.{s}" for s in STAGE_COLOURS} <= set(words)


def test_fields_are_escaped_numbers_formatted_and_markup_kept() -> None:
    payload = "![i](http://x.test/a.png) **bold** <b>"
    text = interface_text("en", "app.no_model", reason=payload)
    assert "![i](" not in text and "**bold**" not in text and "<b>" not in text and "&lt;b&gt;" in text
    assert interface_text("zh", "model_card.shard_plan", plan=Markup("`cpu`")) == "分片方案：`cpu`"
    assert interface_text("en", "history.export_help", limit=50_000) == \
        "Every matching row (the newest 50,000 at most), all columns."
    assert interface_text("zh", "batch.eta", seconds=12.4) == " · 预计还需约 12 秒"


def test_a_missing_key_or_a_reaching_field_is_refused_by_name() -> None:
    with pytest.raises(MissingInterfaceText, match="history.nope"):
        interface_text("zh", "history.nope")
    table("en")["test.reaching"] = "{x.__class__}"
    try:
        with pytest.raises(MissingInterfaceText, match="not a plain name"):
            interface_text("en", "test.reaching", x="a")
    finally:
        del table("en")["test.reaching"]


def test_display_time_shows_stored_utc_in_the_analysts_zone() -> None:
    shanghai = zoneinfo.ZoneInfo("Asia/Shanghai")
    assert display_time("2026-12-01T23:59:05.123+00:00", shanghai) == "2026-12-02 07:59:05"
    assert display_time("2026-12-01T23:59:05", shanghai) == "2026-12-02 07:59:05"  # no offset: UTC
    assert display_time(dt.datetime(2026, 7, 1, 12, tzinfo=dt.UTC), zoneinfo.ZoneInfo("Europe/Berlin")) == \
        "2026-07-01 14:00:00"
    assert display_time(0.0, dt.UTC) == "1970-01-01 00:00:00"
    assert display_time("not a time", shanghai) == "not a time"


def _app(locale: str | None = None, timezone: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.context = {"locale": locale, "timezone": timezone}
    return at.run()


def _open(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"../pages/{page}.py").run()
    assert_no_exception(at)
    return at


def test_browser_language_sets_the_interface_and_the_switch_changes_it() -> None:
    at = _app(locale="zh-CN")
    assert_no_exception(at)
    switch = at.sidebar.button_group(key="interface-language")
    assert switch.value == "zh" and switch.label == "语言"
    _open(at, "gpu_monitor")
    assert at.title[0].value == "GPU 监控"
    assert at.segmented_control(key="gpu-monitor-window").label == "时间窗口"
    assert "分片方案：`cpu`" in [c.value for c in at.sidebar.caption]
    at.sidebar.button_group(key="interface-language").set_value("en").run()
    assert_no_exception(at)
    assert at.title[0].value == "GPU monitor"
    assert "Shard plan: `cpu`" in [c.value for c in at.sidebar.caption]
    _open(at, "history")  # the choice holds on the next page
    assert at.title[0].value == "History"
    at.sidebar.button_group(key="interface-language").set_value("zh").run()
    assert at.title[0].value == "历史记录"
    assert at.text_input(key="history-text").label == "问题或回答中的文字"


def test_an_english_or_unknown_browser_gets_english(monkeypatch: pytest.MonkeyPatch) -> None:
    for locale in ("en-GB", None, "de-DE"):
        at = _open(_app(locale=locale), "history")
        assert at.title[0].value == "History" and at.sidebar.button_group(key="interface-language").value == ENGLISH


def test_the_setting_overrides_the_browser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_INTERFACE_LANGUAGE", "zh")
    at = _open(_app(locale="en-US"), "batch")
    assert at.title[0].value == "批量"
    assert at.button(key="batch-start").label == "开始批量处理"
    assert "还没有批次。" in [c.value for c in at.caption]


def test_history_shows_times_and_words_in_the_analysts_zone_and_language(loupe_home: Path) -> None:
    from core.history import HistoryStore
    from core.history.entry import HistoryEntry

    store = HistoryStore(loupe_home / "history.sqlite3")
    store.record(HistoryEntry(session_id="s", page="moderation", question="q", status=EntryStatus.FAILED,
                           created_at="2026-12-01T23:59:05.000+00:00", error="e"))
    at = _open(_app(locale="zh-CN", timezone="Asia/Shanghai"), "history")
    assert "时间为 Asia/Shanghai" in " ".join(c.value for c in at.caption)
    frame = at.dataframe[0].value
    assert list(frame["created_at"]) == ["2026-12-02 07:59:05"]
    assert list(frame["status"]) == ["失败"] and list(frame["page"]) == ["电商审核"]
    heading = next(c.value for c in at.caption if c.value.startswith("#1 ·"))
    assert "2026-12-02 07:59:05" in heading and "会话 s" in heading


def test_batch_in_english_by_default() -> None:
    at = _open(_app(locale="en-US"), "batch")
    assert at.title[0].value == "Batch" and at.button(key="batch-start").label == "Start batch"


def test_charts_speak_the_analysts_language_and_read_their_clock() -> None:
    from tests.test_telemetry_charts import T0, _samples, _trace

    shanghai = zoneinfo.ZoneInfo("Asia/Shanghai")
    fig = memory_figure(_samples(2), [_trace(T0 + 2)], language="zh", zone=shanghai)
    names = {trace.name for trace in fig.data}
    assert {"GPU0 已用（所有进程）", "GPU1 本进程", "GPU0 总量 22.2 GB", "解码", "预填充"} <= names
    assert fig.layout.yaxis.title.text == "显存 GB" and fig.layout.xaxis2.title.text == "时间（Asia/Shanghai）"
    used = next(trace for trace in fig.data if trace.name == "GPU0 已用（所有进程）")
    # T0 is 2026-09-21 14:13:20 UTC: the axis shows Shanghai's wall clock, eight hours on
    assert used.x[0] == dt.datetime(2026, 9, 21, 22, 13, 20)
    hover = next(trace for trace in fig.data if trace.name == "stages").hovertext
    assert any("解码 · 2.00 s" in h and "已回答" in h for h in hover)
    load = load_figure(_samples(1), language="zh", zone=shanghai)
    assert [a.text for a in load.layout.annotations] == ["利用率 %", "温度 °C", "功耗 W"]
    process = memory_figure(_samples(0), state="no <b>driver</b>", language="zh", zone=shanghai)
    assert process.layout.title.text == "本进程 · 未读到 GPU：no &lt;b&gt;driver&lt;/b&gt;"  # Plotly's HTML escaped


@pytest.fixture
def chinese(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_INTERFACE_LANGUAGE", "zh")
    monkeypatch.setenv("LOUPE_MAX_NEW_TOKENS", "8")


def test_the_playground_speaks_chinese(loupe_home: Path, chinese: None) -> None:
    at = _open(_app(locale="en-US"), "playground")
    assert at.title[0].value == "自由提问"
    assert at.chat_input(key="playground-chat").placeholder == "就图片提问；可用回形针附加最多 4 张图片"
    assert at.button(key="playground-new-conversation").label == "新对话"
    assert at.selectbox(key="playground-template").label == "模板"
    assert at.selectbox(key="playground-template").options[0] == "自由提问（不用模板）"
    assert at.segmented_control(key="playground-source").options == ["示例", "上传"]
    assert at.expander[0].label == "生成设置" and at.number_input(key="playground-max-new").label == "最大新 token 数"
    at.chat_input(key="playground-chat").set_value("What is this?").run()
    assert_no_exception(at)
    regenerate = next(b for b in at.button if b.key.startswith("playground-regenerate-"))
    assert regenerate.label == "重新生成"
    assert "已记录在历史中，编号 #1。" in [c.value for c in at.caption]
    at.segmented_control(key="playground-source").set_value("Upload").run()  # the values stay English
    assert at.segmented_control(key="playground-source").value == "Upload"


def test_a_refusal_before_the_model_is_in_chinese(loupe_home: Path, chinese: None) -> None:
    at = _open(_app(locale="en-US"), "playground")
    at.segmented_control(key="playground-source").set_value("Upload").run()
    at.chat_input(key="playground-chat").set_value("What is this?").run()
    assert [e.value for e in at.error] == [interface_text("zh", "chat.no_image")]
    assert "没有可提问的图片" in at.error[0].value


def test_compare_speaks_chinese(loupe_home: Path, chinese: None) -> None:
    at = _open(_app(locale="en-US"), "compare")
    assert at.title[0].value == "对比"
    assert at.button(key="compare-run").label == "对比"
    assert at.multiselect(key="compare-models").label == "模型（每个提示都会问每个模型）"
    assert at.multiselect(key="compare-models").options[0].endswith("（本地加载）")
    assert at.toggle(key="compare-batched").label == "每张图片一次批量调用"
    assert "还没有对比。" in [c.value for c in at.caption]
    at.button(key="compare-run").click().run()
    assert_no_exception(at)
    assert at.subheader[0].value == "对比 #1" and at.subheader[1].value == "逐词差异"
    assert sum("个 token ·" in c.value and "批量" in c.value for c in at.caption) == 2
    assert at.selectbox(key="compare-diff-a").label == "从" and at.selectbox(key="compare-diff-a").options[0].startswith("图片 1")


def test_review_speaks_chinese(loupe_home: Path, chinese: None) -> None:
    from tests.test_review_queue_page import _results

    _results(loupe_home, ["reject"])
    at = _open(_app(locale="en-US"), "review")
    assert at.title[0].value == "复核"
    assert at.radio(key="review-decision").options == ["同意（拒绝）", "改判：通过", "改判：待复核", "改判：拒绝"]
    assert at.radio(key="review-decision").value == "agree"  # the stored choices stay English
    assert [at.button(key=f"review-key-{c}").label for c in ("agree", "pass", "needs_review", "reject")] == \
        ["同意 (a)", "通过 (1)", "待复核 (2)", "拒绝 (3)"]
    assert at.button(key="review-save").label == "保存复核"
    assert at.segmented_control(key="review-shown").options == ["全部", "未复核", "已复核"]
    assert at.selectbox(key="review-reason").label == "改判理由"
    assert at.selectbox(key="review-reason").options[1] == interface_text("zh", "override_reason.missed_a_violation")
    at.selectbox(key="review-reason").set_value("missed a violation")
    at.radio(key="review-decision").set_value("pass")
    at.button(key="review-save").click().run()
    assert_no_exception(at)
    assert at.subheader[0].value == "一致性" and "还没有复核。" not in [c.value for c in at.caption]
    assert any("仅基于 1 条复核" in w.value for w in at.warning)
    headers = json.loads(at.dataframe[0].proto.columns)  # the column config: English columns, Chinese headers
    assert headers["template"]["label"] == "模板" and headers["reviewed"]["label"] == "已复核（n）"


@pytest.mark.parametrize(("page", "chinese_title", "english_title"),
                         [("playground", "自由提问", "Playground"), ("compare", "对比", "Compare"),
                          ("review", "复核", "Review")])
def test_switching_language_redraws_the_page_with_its_choices(loupe_home: Path, page: str, chinese_title: str,
                                                              english_title: str) -> None:
    from tests.test_review_queue_page import _results

    _results(loupe_home, ["reject"])  # Review with an item: its decision and reason choices are redrawn too
    at = _open(_app(locale="zh-CN"), page)
    assert at.title[0].value == chinese_title
    at.sidebar.button_group(key="interface-language").set_value("en").run()
    assert_no_exception(at)
    assert at.title[0].value == english_title
    if page == "review":
        assert at.radio(key="review-decision").options[0] == "Agree (reject)"
