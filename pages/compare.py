"""Compare: images × templates or free prompts, answered side by side (one batched call per image), a word diff
between any two answers, and saved comparisons re-opened or re-run."""
import streamlit as st

from core.analysis import compare, word_diff
from core.errors import LoupeError
from core.inputs import samples
from core.inputs.images import ACCEPTED_FORMATS
from core.inputs.templates import load_templates
from core.serving.recorded_ask import ImageUpload
from dashboard.widgets.answer_panel import show_entry
from dashboard.widgets.model_resource import get_history, require_engine
from dashboard.widgets.outside_text import markdown_text, one_html_block
from dashboard.widgets.session import session_id
from dashboard.widgets.status_line import show_status_line

UPLOAD_TYPES = sorted({"jpg", "jpeg", "tif", *(f.lower() for f in ACCEPTED_FORMATS)})
GROUP_KEY = "compare-group"

engine = require_engine()
store = get_history()
st.title("Compare")
st.caption("Put 2 to 6 templates or prompts side by side on one image, or one template across several images. "
           "On models that can, each image's prompts run as one batched call with one vision encoding.")

templates = {t.id: t for t in load_templates()}
left, right = st.columns(2, gap="large")
with left:
    titles = {s.id: s.title for s in samples.SAMPLES}
    chosen_samples = st.multiselect("Sample images", list(titles), default=[samples.SAMPLES[2].id],
                                    format_func=titles.__getitem__, key="compare-samples")
    uploads = st.file_uploader("…or upload images", type=UPLOAD_TYPES, accept_multiple_files=True,
                               key="compare-uploads")
with right:
    chosen_templates = st.multiselect(
        "Templates (their fields take their defaults)", list(templates), key="compare-templates",
        default=["mod-checklist-en", "mod-claims-en"],
        format_func=lambda i: f"{templates[i].title} · {templates[i].language} · {templates[i].scenario}")
    free = st.text_area("Free prompts, one per line", key="compare-free", height=90)
    a, b = st.columns(2)
    max_new = a.number_input("Max new tokens", 1, 8192, min(engine.settings.max_new_tokens, 256), key="compare-max-new")
    batched = b.toggle("One batched call per image", value=True, key="compare-batched",
                       help="Off: the prompts are answered one after another (to compare the time).")

images = [ImageUpload(samples.by_id(i).read(), i) for i in chosen_samples]
images += [ImageUpload(u.getvalue(), u.name) for u in uploads or []]
try:
    columns = [compare.template_column(templates[i], max_chars=engine.settings.max_question_chars)
               for i in chosen_templates]
    columns += [compare.CompareColumn(f"Prompt {n}", line.strip())
                for n, line in enumerate((x for x in free.splitlines() if x.strip()), 1)]
    generation = engine.default_generation(max_new_tokens=int(max_new))
    compare.check_shape(len(images), len(columns))
    problem = ""
except LoupeError as exc:
    problem = str(exc)
if problem:
    st.info(markdown_text(problem), icon=":material/info:")
if st.button("Compare", type="primary", icon=":material/compare:", key="compare-run", disabled=bool(problem)):
    with st.spinner(f"Answering {len(images) * len(columns)} prompts…"):
        run = compare.compare(engine, store, images, columns, generation=generation, session_id=session_id(),
                              batched=batched)
    st.session_state[GROUP_KEY] = run.group_id

with st.expander("Saved comparisons"):
    saved = compare.list_groups(store)
    if saved:
        labels = {g.id: f"#{g.id} · {g.created_at[:19].replace('T', ' ')} · {g.model} · "
                        f"{len(g.images)} image(s) × {', '.join(g.columns)}" for g in saved}
        picked = st.selectbox("Comparison", list(labels), format_func=labels.__getitem__, key="compare-saved")
        x, y, z = st.columns(3)
        if x.button("Open", key="compare-open", icon=":material/folder_open:"):
            st.session_state[GROUP_KEY] = picked
        if y.button("Re-run on this model", key="compare-rerun", icon=":material/replay:"):
            with st.spinner("Re-running…"):
                st.session_state[GROUP_KEY] = compare.rerun_group(engine, store, picked, session_id=session_id()).group_id
        if z.button("Re-run on the images above", key="compare-rerun-images", disabled=not images,
                    icon=":material/image:"):
            with st.spinner("Re-running…"):
                st.session_state[GROUP_KEY] = compare.rerun_group(engine, store, picked, images=images,
                                                                  session_id=session_id()).group_id
    else:
        st.caption("No comparison yet.")

if (group_id := st.session_state.get(GROUP_KEY)) is not None:
    run = compare.load_group(store, group_id)
    st.subheader(f"Comparison #{run.group_id}" + (f" (re-run of #{run.rerun_of})" if run.rerun_of else ""))
    for note in run.notes:
        st.caption(markdown_text(note))
    for i, name in enumerate(run.image_names):
        # An uploaded file's name is the uploader's: escaped (a backtick in it closed the code span it was in).
        st.markdown(f"**Image {i + 1}:** {markdown_text(name)}")
        for j, col in enumerate(st.columns(len(run.columns))):
            cell = run.cell(i, j)
            with col:
                st.markdown(f"**{markdown_text(run.columns[j].label)}**")
                show_entry(cell.entry, compact=True)
                st.caption(f"{cell.entry.output_tokens} tokens · {cell.entry.timings.get('total', 0.0):.2f} s"
                           + (" · truncated" if cell.entry.truncated else "")
                           + (" · batched" if cell.batched else " · one at a time"))
    names = {(c.image_index, c.column_index): f"{run.image_names[c.image_index]} × {run.columns[c.column_index].label}"
             for c in run.cells}
    if len(names) >= 2:
        st.subheader("Word diff")
        keys = list(names)
        d1, d2 = st.columns(2)
        first = d1.selectbox("From", keys, format_func=names.__getitem__, key="compare-diff-a")
        second = d2.selectbox("To", keys, index=1, format_func=names.__getitem__, key="compare-diff-b")
        a_text, b_text = run.cell(*first).entry.answer, run.cell(*second).entry.answer
        st.caption(f"{word_diff.similarity(a_text, b_text):.0%} of words in common · "
                   "removed from the first in red, added in the second in green")
        st.markdown(one_html_block(word_diff.diff_html(word_diff.word_diff(a_text, b_text))),  # escaped in core
                    unsafe_allow_html=True)
show_status_line()
