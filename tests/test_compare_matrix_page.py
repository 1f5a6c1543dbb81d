"""The Compare page as a matrix (issue #17 item 7), driven with AppTest on the real demo model: thumbnails as row
headers, each column's model and prompt text in its header, equal cells with tokens/time/truncation, a diff
between any two cells, a remote model as a column, and a comparison that survives navigating away."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.inputs.templates import by_id
from tests.app_pages import APP, assert_no_exception, open_page


@pytest.fixture(autouse=True)
def short_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_MAX_NEW_TOKENS", "8")


def _run_two_by_two():
    at = open_page("compare")
    at.multiselect(key="compare-samples").set_value(["product-router", "document-table"]).run()
    at.multiselect(key="compare-templates").set_value(["mod-checklist-en", "mod-claims-en"]).run()
    at.button(key="compare-run").click().run()
    assert_no_exception(at)
    return at


def _texts(at) -> list[str]:
    return [t.value for t in at.text]


def test_the_matrix_has_thumbnails_prompt_headers_and_cells_with_their_figures(loupe_home: Path) -> None:
    at = _run_two_by_two()
    assert at.subheader[0].value == "Comparison #1"
    # Column headers: the model, the template's title and its exact question text (as text, not Markdown).
    for template_id in ("mod-checklist-en", "mod-claims-en"):
        assert by_id(template_id).fill(None, max_chars=None) in _texts(at)
    # Row headers: each image's thumbnail, captioned with its name.
    thumbs = at.get("image")
    assert len(thumbs) == 2
    # Four cells, each with its tokens, time and truncation, in a scrolling box of one height.
    figures = [c.value for c in at.caption if " tokens · " in c.value]
    assert len(figures) == 4 and all(" s" in f for f in figures)
    boxes = [at.get_by_key(f"compare-cell-{i}-{j}") for i in range(2) for j in range(2)]
    assert {b.proto.height_config.pixel_height for b in boxes} == {240}
    # Any two cells can be diffed.
    at.selectbox(key="compare-diff-a").set_value((1, 0)).run()
    at.selectbox(key="compare-diff-b").set_value((0, 1)).run()
    assert_no_exception(at)
    assert any("of words in common" in c.value for c in at.caption)


def test_a_comparison_survives_navigating_away_and_back(loupe_home: Path) -> None:
    at = _run_two_by_two()
    at.switch_page("../pages/history.py").run()
    assert_no_exception(at)
    at.switch_page("../pages/compare.py").run()
    assert_no_exception(at)
    assert at.subheader[0].value == "Comparison #1"
    assert len([c for c in at.caption if " tokens · " in c.value]) == 4
    # A reload is a new session: the comparison comes back from history by the id in the address.
    assert at.query_params["comparison"] == "1"
    fresh = AppTest.from_file(APP, default_timeout=240)
    fresh.query_params["comparison"] = "1"
    fresh.run()
    fresh.switch_page("../pages/compare.py").run()
    assert_no_exception(fresh)
    assert fresh.subheader[0].value == "Comparison #1"


def test_the_remote_model_option_says_how_to_configure_it(loupe_home: Path) -> None:
    at = open_page("compare")
    models = at.multiselect(key="compare-models")
    assert models.value == ["local"]
    assert any("openai_base_url" in o for o in models.options)
    models.set_value(["local", "remote"]).run()
    assert any("openai_base_url" in i.value.replace("\\", "") for i in at.info)
    assert at.button(key="compare-run").disabled
    at.multiselect(key="compare-models").set_value([]).run()
    assert any("Choose a model" in i.value for i in at.info) and at.button(key="compare-run").disabled


@pytest.fixture(scope="module")
def remote_server(engine):
    """Loupe's own API on 127.0.0.1 serving the demo model: an OpenAI-compatible server, real HTTP."""
    from core.serving.api import create_app, start_server
    from core.serving.engine import Engine
    from core.serving.scheduler import Scheduler

    scheduler = Scheduler(engine.backend)
    running = start_server(create_app(Engine(backend=engine.backend, settings=engine.settings), scheduler))
    yield running
    running.stop()
    scheduler.close()


def test_the_local_model_beside_a_remote_one(loupe_home: Path, remote_server, monkeypatch) -> None:
    monkeypatch.setenv("LOUPE_OPENAI_BASE_URL", f"{remote_server.url}/v1")
    at = open_page("compare")
    at.multiselect(key="compare-models").set_value(["local", "remote"]).run()
    at.multiselect(key="compare-templates").set_value(["mod-claims-en"]).run()
    at.button(key="compare-run").click().run()
    assert_no_exception(at)
    assert at.subheader[0].value == "Comparison #1"
    figures = [c.value for c in at.caption if " tokens · " in c.value]
    assert len(figures) == 2 and "batched" not in figures[1]
    titles = [m.value for m in at.markdown if m.value.startswith("**") and "Advertising claims" in m.value]
    assert len(titles) == 2
    local, remote = (at.get_by_key(f"compare-cell-0-{j}") for j in range(2))
    assert [t.value for t in local.text] == [t.value for t in remote.text]  # one model, two routes, one answer
