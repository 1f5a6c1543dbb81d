"""Compare: images × columns, a column being (model, prompt): templates or free prompts on the local model, and on a
remote OpenAI-compatible one beside it. Drawn as a matrix (dashboard/widgets/compare_matrix.py) with a word diff
between any two cells; saved comparisons re-opened or re-run. The comparison shown is kept in session_state by
its id and re-read from history, so it is still there after the analyst visits another page."""
import streamlit as st

from core.analysis import compare
from core.errors import LoupeError, QuestionError
from core.inputs import samples
from core.inputs.images import ACCEPTED_FORMATS
from core.inputs.templates import load_templates
from core.serving.recorded_ask import ImageUpload
from dashboard.widgets.compare_matrix import show_diff, show_matrix
from dashboard.widgets.core_text import core_text
from dashboard.widgets.interface_language import current_language, t
from dashboard.widgets.model_resource import get_history, require_engine
from dashboard.widgets.outside_text import markdown_text
from dashboard.widgets.remote_model import remote_choice, remote_engine
from dashboard.widgets.session import session_id
from dashboard.widgets.status_line import show_status_line

UPLOAD_TYPES = sorted({"jpg", "jpeg", "tif", *(f.lower() for f in ACCEPTED_FORMATS)})
GROUP_KEY = "compare-group"  # not a widget's key: Streamlit keeps it across pages for the whole session
LINK_PARAM = "comparison"  # ?comparison=<group id> in the address

engine = require_engine()
store = get_history()
st.title(t("compare.title"))
st.caption(t("compare.intro"))
remote = remote_choice(engine.settings)
model_labels = {compare.LOCAL: t("compare.loaded_here", escape=str, name=engine.describe().name)}
if remote is not None:
    model_labels[compare.REMOTE] = remote.label

templates = {t.id: t for t in load_templates()}
left, right = st.columns(2, gap="large")
with left:
    titles = {s.id: s.title_in(current_language()) for s in samples.SAMPLES}
    chosen_samples = st.multiselect(t("compare.sample_images"), list(titles), default=[samples.SAMPLES[2].id],
                                    format_func=titles.__getitem__, key="compare-samples")
    uploads = st.file_uploader(t("compare.or_upload"), type=UPLOAD_TYPES, accept_multiple_files=True,
                               key="compare-uploads")
with right:
    chosen_models = st.multiselect(t("compare.models"), list(model_labels), default=[compare.LOCAL],
                                   format_func=model_labels.__getitem__, key="compare-models")
    chosen_templates = st.multiselect(
        t("compare.templates"), list(templates), key="compare-templates",
        default=["mod-checklist-en", "mod-claims-en"],
        format_func=lambda i: f"{templates[i].title} · {templates[i].language} · {templates[i].scenario}")
    free = st.text_area(t("compare.free_prompts"), key="compare-free", height=90)
    a, b = st.columns(2)
    max_new = a.number_input(t("compare.max_new_tokens"), 1, 8192, min(engine.settings.max_new_tokens, 256),
                             key="compare-max-new")
    batched = b.toggle(t("compare.batched"), value=True, key="compare-batched", help=t("compare.batched_help"))

images = [ImageUpload(samples.by_id(i).read(), i) for i in chosen_samples]
images += [ImageUpload(u.getvalue(), u.name) for u in uploads or []]
remote_model = None
shown = ""  # a refusal of core's, in the analyst's language (core_text); else `problem` as it reads
try:
    prompts = [compare.template_column(templates[i], max_chars=engine.settings.max_question_chars)
               for i in chosen_templates]
    prompts += [compare.CompareColumn(f"Prompt {n}", line.strip())
                for n, line in enumerate((x for x in free.splitlines() if x.strip()), 1)]
    if not chosen_models:
        raise QuestionError(t("compare.choose_model", escape=str))  # plain text: shown through markdown_text below
    columns = [compare.CompareColumn(p.label, p.question, p.template, model) for p in prompts for model in chosen_models]
    generation = engine.default_generation(max_new_tokens=int(max_new))
    compare.check_shape(len(images), len(columns))
    problem = ""
    if compare.REMOTE in chosen_models and remote is not None:
        problem = remote.problem
        if not problem:
            remote_model, problem = remote_engine(engine.settings)
except LoupeError as exc:
    problem, shown = str(exc), core_text(exc)
if problem:
    st.info(shown or markdown_text(problem), icon=":material/info:")
if st.button(t("compare.run"), type="primary", icon=":material/compare:", key="compare-run", disabled=bool(problem)):
    with st.spinner(t("compare.answering", count=len(images) * len(columns))):
        run = compare.compare(engine, store, images, columns, generation=generation, session_id=session_id(),
                              batched=batched, remote=remote_model)
    st.session_state[GROUP_KEY] = run.group_id

with st.expander(t("compare.saved")):
    saved = compare.list_groups(store)
    if saved:
        labels = {g.id: t("compare.saved_label", escape=str, id=g.id, time=g.created_at[:19].replace("T", " "),
                          model=g.model, images=len(g.images), columns=", ".join(g.columns)) for g in saved}
        picked = st.selectbox(t("compare.comparison"), list(labels), format_func=labels.__getitem__, key="compare-saved")
        x, y, z = st.columns(3)
        if x.button(t("compare.open"), key="compare-open", icon=":material/folder_open:"):
            st.session_state[GROUP_KEY] = picked
        again = y.button(t("compare.rerun"), key="compare-rerun", icon=":material/replay:")
        on_images = z.button(t("compare.rerun_images"), key="compare-rerun-images", disabled=not images,
                             icon=":material/image:")
        if again or on_images:
            # Its remote columns (if any) are asked of the remote server configured now.
            rerun_remote = remote_model or (remote_engine(engine.settings)[0] if remote and not remote.problem else None)
            try:
                with st.spinner(t("compare.rerunning")):
                    st.session_state[GROUP_KEY] = compare.rerun_group(
                        engine, store, picked, images=images if on_images else None, session_id=session_id(),
                        remote=rerun_remote).group_id
            except LoupeError as exc:
                st.error(core_text(exc))
    else:
        st.caption(t("compare.none_yet"))

# A reload starts a new session: the comparison's id in the address brings it back from history.
if GROUP_KEY not in st.session_state and (linked := st.query_params.get(LINK_PARAM, "")).isdigit():
    st.session_state[GROUP_KEY] = int(linked)
run = None
if (group_id := st.session_state.get(GROUP_KEY)) is not None:
    try:
        run = compare.load_group(store, group_id)
        st.query_params[LINK_PARAM] = str(group_id)
    except LoupeError as exc:  # a link to a comparison this history does not have
        del st.session_state[GROUP_KEY]
        st.query_params.pop(LINK_PARAM, None)
        st.warning(core_text(exc))
if run is not None:
    st.subheader(t("compare.heading_rerun", id=run.group_id, rerun_of=run.rerun_of) if run.rerun_of
                 else t("compare.heading", id=run.group_id))
    for note in run.notes:
        st.caption(markdown_text(note))
    show_matrix(store, run)
    show_diff(run)
show_status_line()
