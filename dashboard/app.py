"""Loupe's entry point: routing only. Start it with the README's run command."""
import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path; pages import core/ from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="Loupe", page_icon="🔍", layout="wide")

pages = {
    "Ask": [
        st.Page("../pages/playground.py", title="Playground", icon="💬", default=True),
    ],
    "Monitor": [
        st.Page("../pages/gpu_monitor.py", title="GPU monitor", icon="📈"),
    ],
}
st.navigation(pages).run()
