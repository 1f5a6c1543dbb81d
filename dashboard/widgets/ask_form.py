"""The page every scenario shares: template and fields, image (sample or upload) with the model's-eye
preview, question box with a live character count, generation settings, Submit, and the answer.

Decisions: changing a template or a field refills the question box, but the analyst's own edits stay
until then; the box's limit is the settings' max_question_chars, counted live in the browser (the filled
template is checked against it first, so a template never arrives silently cut). The last answer stays
on the page (read back from history) until the next Submit.
"""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from core.errors import LoupeError, TemplateError
from core.inputs import questions, samples
from core.inputs.images import ACCEPTED_FORMATS
from core.inputs.templates import Template, for_scenario
from core.records import GenerationSettings, PreparedImage
from core.serving.engine import Engine
from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record
from dashboard.widgets.answer_panel import show_entry, stream_answer
from dashboard.widgets.model_resource import get_history, require_engine
from dashboard.widgets.outside_text import markdown_text
from dashboard.widgets.session import session_id
from dashboard.widgets.status_line import show_status_line

FREE = "free"  # the template picker's "no template" choice (Playground)
UPLOAD_TYPES = sorted({"jpg", "jpeg", "tif", *(f.lower() for f in ACCEPTED_FORMATS)})
VIDEO_TYPES = ["mov", "mp4", "webm"]  # offered only when the loaded model takes video (backend.takes_video)
LANGUAGE_NAMES = {"zh": "中文", "en": "English"}


@st.cache_data(max_entries=8, show_spinner=False)
def _prepare(data: bytes, name: str, max_width: int, max_pixels: int) -> PreparedImage:
    from core.inputs import images, video

    if video.is_video_name(name):  # sampled frames tiled into one image, with the sampling in its notes
        return video.prepare_video(data, name=name)
    return images.prepare(data, max_width=max_width, max_pixels=max_pixels)


def _template_picker(page: str, templates: tuple[Template, ...], allow_free: bool) -> Template | None:
    options = ([FREE] if allow_free else []) + [t.id for t in templates]
    by_id = {t.id: t for t in templates}
    chosen = st.selectbox(
        "Template", options, key=f"{page}-template",
        format_func=lambda i: "Free question (no template)" if i == FREE
        else f"{by_id[i].title} · {LANGUAGE_NAMES[by_id[i].language]}",
    )
    return by_id.get(chosen)


def _fields(page: str, template: Template) -> dict[str, str]:
    # A template's words are the team's (assets/templates), shown as they wrote them, never as markup.
    if template.description:
        st.caption(markdown_text(template.description))
    values: dict[str, str] = {}
    columns = st.columns(max(len(template.fields), 1)) if template.fields else []
    for column, field in zip(columns, template.fields, strict=True):
        key = f"{page}-{template.id}-{field.name}"
        with column:
            if field.choices:
                values[field.name] = st.selectbox(markdown_text(field.label), field.choices, key=key,
                                                  help=markdown_text(field.help) if field.help else None,
                                                  index=field.choices.index(field.default) if field.default else 0)
            else:
                values[field.name] = st.text_input(markdown_text(field.label), value=field.default, key=key,
                                                   help=markdown_text(field.help) if field.help else None)
    if template.output is not None:
        st.caption("Checklist: " + " · ".join(markdown_text(label) for _item, label in template.output.checklist))
    return values


def _question_box(page: str, template: Template | None, values: dict[str, str], limit: int) -> str:
    key, filled_key = f"{page}-question", f"{page}-last-filled"
    if template is not None:
        try:
            filled = template.fill(values, max_chars=limit)
        except TemplateError as exc:
            st.error(markdown_text(exc), icon=":material/edit_note:")  # may quote the analyst's field values
        else:
            if st.session_state.get(filled_key) != (template.id, filled):
                st.session_state[key] = filled
                st.session_state[filled_key] = (template.id, filled)
    # No max_chars: with it the browser silently drops or cuts a pasted longer question. The analyst sees
    # all of it, the count turns red, and Submit gets core's QuestionError (kept in history) as any refusal.
    question = st.text_area(
        "Question", key=key, height=120,
        placeholder="图中表格第三列第一行的数值是多少？ / What is the title of the document?",
        help="Counted in characters: a Chinese character or “，” counts 1. Ask one specific thing; "
             "direct questions work better than “describe this image”.",
    )
    length = questions.char_count(question)
    if length > limit:
        st.caption(f":red[{length} / {limit} characters: {length - limit} too many, shorten it before submitting]")
    else:
        st.caption(f"{length} / {limit} characters")
    return question


def _image_picker(page: str, scenario: str, takes_video: bool) -> ImageUpload | None:
    source = st.segmented_control("Image", ["Sample", "Upload"], default="Sample", key=f"{page}-source")
    if source == "Upload":
        label, kinds = ("Upload an image or a video", UPLOAD_TYPES + VIDEO_TYPES) if takes_video else (
            "Upload an image", UPLOAD_TYPES)
        video_help = " A video (MP4, WebM, MOV) becomes its sampled frames tiled into one image." if takes_video else ""
        upload = st.file_uploader(label, type=kinds, key=f"{page}-upload",
                                  help="JPEG, PNG, WebP, BMP, GIF or TIFF; it is prepared exactly as the model sees it."
                                  + video_help)
        return ImageUpload(upload.getvalue(), upload.name) if upload is not None else None
    choices = samples.for_scenario(scenario)
    titles = {s.id: s.title for s in choices}
    sample_id = st.selectbox("Sample image", list(titles), format_func=titles.__getitem__, key=f"{page}-sample")
    sample = samples.by_id(sample_id)
    assert sample is not None
    st.caption(sample.description)
    return ImageUpload(sample.read(), sample.id)


def _preview(engine: Engine, image: ImageUpload) -> ImageUpload:
    """Show the image as the model will see it; returns the upload carrying that very prepared image (or
    without one when it cannot be read: Submit then records core's ImageError like any refusal)."""
    settings = engine.settings
    try:
        prepared = _prepare(image.data, image.name, settings.max_width, settings.max_pixels)
    except LoupeError as exc:
        st.error(markdown_text(exc), icon=":material/broken_image:")
        return image
    st.image(prepared.image, caption=f"As the model sees it: {prepared.width}×{prepared.height}")
    original = "×".join(map(str, prepared.original_size))
    notes = "; ".join(prepared.notes) if prepared.notes else "used as uploaded, nothing changed"
    st.caption(f"{'Sample' if samples.by_id(image.name) else 'Uploaded'}: {prepared.source_format} {original} · "
               f"Prepared: {notes}")
    return replace(image, prepared=prepared)


def _generation(page: str, engine: Engine) -> GenerationSettings | None:
    with st.expander("Generation settings"):
        left, right = st.columns(2)
        max_new = left.number_input("Max new tokens", 1, 8192, engine.settings.max_new_tokens, key=f"{page}-max-new")
        beams = right.number_input("Beams (2–3 arrive in one piece)", 1, 3, 1, key=f"{page}-beams")
        sample = st.toggle("Sample instead of greedy decoding", key=f"{page}-sample-decoding")
        temperature = top_p = seed = None
        if sample:
            a, b, c = st.columns(3)
            temperature = a.number_input("Temperature", 0.05, 2.0, 1.0, 0.05, key=f"{page}-temperature")
            top_p = b.number_input("Top-p", 0.05, 1.0, 0.8, 0.05, key=f"{page}-top-p")
            seed = c.number_input("Seed", 0, 2**31 - 1, 0, key=f"{page}-seed")
    try:
        return engine.default_generation(
            max_new_tokens=int(max_new), num_beams=int(beams), do_sample=sample,
            **({"temperature": temperature, "top_p": top_p, "seed": int(seed)} if sample else {}),
        )
    except LoupeError as exc:
        st.error(markdown_text(exc))
        return None


def render_ask_page(*, page: str, scenario: str, title: str, intro: str, allow_free: bool = False) -> None:
    """The whole scenario page; `page` names it in history, `scenario` picks its templates and samples."""
    engine = require_engine()
    store = get_history()
    session = session_id()
    st.title(title)
    st.caption(intro)
    try:
        templates = for_scenario(scenario)
    except TemplateError as exc:
        st.error(f"The templates could not be loaded: {markdown_text(exc)}")
        templates = ()
    limit = engine.settings.max_question_chars
    left, right = st.columns([5, 6], gap="large")
    with left:
        image = _image_picker(page, scenario, engine.backend.takes_video)
        if image is not None:
            image = _preview(engine, image)
    with right:
        template = _template_picker(page, templates, allow_free or not templates)
        values = _fields(page, template) if template is not None else {}
        question = _question_box(page, template, values, limit)
        generation = _generation(page, engine)
        submit = st.button("Submit", type="primary", key=f"{page}-submit", icon=":material/send:",
                           disabled=image is None or generation is None)
        if image is None:
            st.caption("Pick a sample or upload an image first.")
    st.divider()
    area = st.empty()
    last_key = f"{page}-last-entry"
    if submit and image is not None:
        request = AskRequest(session_id=session, page=page, question=question, images=(image,),
                             template=template, generation=generation)
        entry = stream_answer(ask_and_record(engine, store, request), area)
        if entry is not None:
            st.session_state[last_key] = entry.id
    elif (last := st.session_state.get(last_key)) is not None and (entry := store.get(last)) is not None:
        with area.container():
            show_entry(entry)
    show_status_line()
