"""The page every scenario shares: image (sample or upload) with the model's-eye preview, template and fields,
generation settings, then the conversation (dashboard/widgets/conversation.py) and its question box pinned at
the bottom (dashboard/widgets/chat_input.py).

Decisions: changing a template or a field refills the question box, but the analyst's own edits stay until
then (the filled template is checked against max_question_chars first, so a template never arrives silently
cut). The template, and so a moderation verdict, goes with the question it filled, not with a follow-up. The
conversation is read back from history on every run, so a refresh shows it as it was recorded.
"""
from __future__ import annotations

from dataclasses import replace

import streamlit as st
from PIL import Image

from core.errors import LoupeError, TemplateError
from core.history import HistoryEntry, HistoryStore
from core.inputs import samples
from core.inputs.images import ACCEPTED_FORMATS
from core.inputs.templates import Template, for_scenario
from core.inputs.templates import by_id as template_by_id
from core.records import GenerationSettings, PreparedImage
from core.serving.engine import Engine
from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record
from dashboard.widgets import chat_input
from dashboard.widgets.answer_panel import stream_answer
from dashboard.widgets.conversation import (
    conversation_id,
    earlier_turns,
    images_of,
    new_button,
    show_question,
    start,
    turns,
)
from dashboard.widgets.conversation import show as show_conversation
from dashboard.widgets.core_text import core_text, notes_text
from dashboard.widgets.interface_language import Markup, current_language, t
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
    by_id = {template.id: template for template in templates}
    # Labels looked up now, in this run's language: a format_func may also be called between runs.
    labels = {FREE: t("ask.free_question", escape=str)} | {
        i: f"{template.title} · {LANGUAGE_NAMES[template.language]}" for i, template in by_id.items()}
    chosen = st.selectbox(t("ask.template"), options, key=f"{page}-template", format_func=labels.__getitem__)
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
        st.caption(t("ask.checklist", items=" · ".join(label for _item, label in template.output.checklist)))
    return values


def _fill_box(page: str, template: Template | None, values: dict[str, str], limit: int) -> str:
    """Put the template's question in the chat box when it changes; returns it ('' with no template or when it
    cannot be filled, which is shown)."""
    if template is None:
        return ""
    try:
        filled = template.fill(values, max_chars=limit)
    except TemplateError as exc:
        st.error(core_text(exc), icon=":material/edit_note:")  # may quote the analyst's field values
        return ""
    chat_input.prefill(page, template.id, filled)
    return filled


def _image_picker(page: str, scenario: str, takes_video: bool) -> ImageUpload | None:
    # The options stay English values (scripts and tests set them); only their labels are translated.
    sources = {"Sample": t("ask.source_sample", escape=str), "Upload": t("ask.source_upload", escape=str)}
    source = st.segmented_control(t("ask.image"), list(sources), default="Sample", key=f"{page}-source",
                                  format_func=sources.__getitem__)
    if source == "Upload":
        label, kinds = (t("ask.upload_image_or_video"), UPLOAD_TYPES + VIDEO_TYPES) if takes_video else (
            t("ask.upload_image"), UPLOAD_TYPES)
        video_help = t("ask.upload_video_help") if takes_video else ""
        upload = st.file_uploader(label, type=kinds, key=f"{page}-upload", help=t("ask.upload_help") + video_help)
        return ImageUpload(upload.getvalue(), upload.name) if upload is not None else None
    choices = samples.for_scenario(scenario)
    language = current_language()  # the titles looked up now: a format_func may also be called between runs
    titles = {s.id: s.title_in(language) for s in choices}
    sample_id = st.selectbox(t("ask.sample_image"), list(titles), format_func=titles.__getitem__, key=f"{page}-sample")
    sample = samples.by_id(sample_id)
    assert sample is not None
    st.caption(sample.description_in(language))  # Loupe's own words (core/inputs/samples.py)
    return ImageUpload(sample.read(), sample.id)


def _preview(engine: Engine, image: ImageUpload) -> ImageUpload:
    """Show the image as the model will see it; returns the upload carrying that very prepared image (or
    without one when it cannot be read: Submit then records core's ImageError like any refusal)."""
    settings = engine.settings
    try:
        prepared = _prepare(image.data, image.name, settings.max_width, settings.max_pixels)
    except LoupeError as exc:
        st.error(core_text(exc), icon=":material/broken_image:")
        return image
    st.image(prepared.image, caption=t("ask.as_model_sees", width=prepared.width, height=prepared.height))
    original = "×".join(map(str, prepared.original_size))
    notes = notes_text(prepared.notes, prepared.note_messages) if prepared.notes else t("ask.nothing_changed")
    # The preparation notes are core's own sentences in the analyst's language, their parameters escaped.
    st.caption(t("ask.sample_prepared" if samples.by_id(image.name) else "ask.upload_prepared",
                 format=prepared.source_format, size=original, notes=Markup(notes)))
    return replace(image, prepared=prepared)


def _prepared_if_readable(engine: Engine, upload: ImageUpload) -> ImageUpload:
    """An attachment prepared as the model will get it (and shown so); one that cannot be read goes to core as
    it is, which refuses it in the turn's answer and records the refusal."""
    settings = engine.settings
    try:
        return replace(upload, prepared=_prepare(upload.data, upload.name, settings.max_width, settings.max_pixels))
    except LoupeError:
        return upload


def _generation(page: str, engine: Engine) -> GenerationSettings | None:
    with st.expander(t("ask.generation_settings")):
        left, right = st.columns(2)
        max_new = left.number_input(t("ask.max_new_tokens"), 1, 8192, engine.settings.max_new_tokens, key=f"{page}-max-new")
        beams = right.number_input(t("ask.beams"), 1, 3, 1, key=f"{page}-beams")
        sample = st.toggle(t("ask.sample_decoding"), key=f"{page}-sample-decoding")
        temperature = top_p = seed = None
        if sample:
            a, b, c = st.columns(3)
            temperature = a.number_input(t("ask.temperature"), 0.05, 2.0, 1.0, 0.05, key=f"{page}-temperature")
            top_p = b.number_input(t("ask.top_p"), 0.05, 1.0, 0.8, 0.05, key=f"{page}-top-p")
            seed = c.number_input(t("ask.seed"), 0, 2**31 - 1, 0, key=f"{page}-seed")
    try:
        return engine.default_generation(
            max_new_tokens=int(max_new), num_beams=int(beams), do_sample=sample,
            **({"temperature": temperature, "top_p": top_p, "seed": int(seed)} if sample else {}),
        )
    except LoupeError as exc:
        st.error(core_text(exc))
        return None


def _next_request(engine: Engine, store: HistoryStore, page: str, entries: tuple[HistoryEntry, ...],
                  picked: ImageUpload | None, template: Template | None, filled: str,
                  generation: GenerationSettings | None, regenerate: bool,
                  submitted: chat_input.Submitted | None) -> tuple[AskRequest | None, list[Image.Image]]:
    """What to ask now, with the images to show beside the question (those of a first question or attached to
    this one; not those carried over from the turn before). None: nothing, or a refusal shown under the
    conversation, which is no history row."""
    takes_history = engine.backend.takes_history
    if generation is None:  # its error is shown beside the settings
        return None, []
    if regenerate and entries:
        last = entries[-1]
        return AskRequest(session_id=session_id(), page=page, question=last.question, images=images_of(store, last),
                          template=template_by_id(last.template_id) if last.template_id else None,
                          generation=generation, rerun_of=last.id, conversation_id=last.conversation_id,
                          history=earlier_turns(entries[:-1]) if takes_history else ()), []
    if submitted is None:
        return None, []
    attached = tuple(_prepared_if_readable(engine, upload) for upload in submitted.attachments)
    images = attached or (images_of(store, entries[-1]) if entries else (picked,) if picked else ())
    limit = engine.settings.max_question_chars
    reason = chat_input.refusal(submitted, limit=limit, max_images=engine.max_images, has_image=bool(images))
    if reason is not None:
        st.error(reason, icon=":material/block:")
        return None, []
    conversation = entries[0].conversation_id if entries else start(page)
    # The template (and so a moderation verdict) goes with the question it filled, not with a follow-up.
    used = template if template is not None and submitted.question.strip() == filled else None
    shown = [] if entries and not attached else [image.prepared.image for image in images if image.prepared is not None]
    return AskRequest(session_id=session_id(), page=page, question=submitted.question, images=images, template=used,
                      generation=generation, conversation_id=conversation,
                      history=earlier_turns(entries) if takes_history else ()), shown


def render_ask_page(*, page: str, scenario: str, title: str, intro: str, allow_free: bool = False) -> None:
    """The whole scenario page; `page` names it in history, `scenario` picks its templates and samples."""
    engine = require_engine()
    store = get_history()
    session_id()
    st.title(title)
    st.caption(intro)
    try:
        templates = for_scenario(scenario)
    except TemplateError as exc:
        st.error(t("ask.templates_unloadable", reason=str(exc)))
        templates = ()
    limit = engine.settings.max_question_chars
    entries = turns(store, page, conversation_id(page, store))
    left, right = st.columns([5, 6], gap="large")
    with left:
        picked = _image_picker(page, scenario, engine.backend.takes_video)
        if picked is not None:
            picked = _preview(engine, picked)
        if entries:
            st.caption(t("conversation.follow_ups"))
    with right:
        template = _template_picker(page, templates, allow_free or not templates)
        values = _fields(page, template) if template is not None else {}
        filled = _fill_box(page, template, values, limit)
        generation = _generation(page, engine)
        new_button(page, disabled=not entries)
        if not engine.backend.takes_history:
            st.caption(t("conversation.no_history"))
    st.divider()
    regenerate = show_conversation(store, page, entries, can_regenerate=generation is not None)
    submitted = chat_input.question_box(page, limit=limit, max_images=engine.max_images, file_types=UPLOAD_TYPES)
    request, thumbnails = _next_request(engine, store, page, entries, picked, template, filled, generation,
                                        regenerate, submitted)
    if request is not None:
        show_question(request.question, thumbnails)
        with st.chat_message("assistant"):
            stream_answer(ask_and_record(engine, store, request), st.empty(), copyable=True, compact=True)
        st.rerun()  # the page is drawn again from history: the new turn with its Regenerate button
    show_status_line()
