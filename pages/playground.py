"""Playground: any image, any question."""
import streamlit as st

from core.errors import LoupeError
from dashboard.widgets.answer_panel import show_stream
from dashboard.widgets.model_resource import get_engine

st.title("Playground")
engine = get_engine()
card = engine.describe()
if card.is_demo:
    st.warning("demo weights — answers are noise", icon="⚠️")

upload = st.file_uploader("Image", type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"])
question = st.text_area("Question", max_chars=engine.settings.max_question_chars, key="question")
if st.button("Submit", type="primary", disabled=upload is None):
    try:
        prepared = engine.prepare_image(upload.getvalue())
        st.image(prepared.image, caption=" · ".join(prepared.notes) or f"{prepared.width}×{prepared.height}")
        show_stream(engine.ask([prepared], question))
    except LoupeError as exc:
        st.error(str(exc))
