"""Single-key shortcuts for buttons (Streamlit has none): a key press clicks the button with that widget key.

Decision: a few lines of our own JavaScript through st.html(unsafe_allow_javascript=True) rather than the
`streamlit-shortcuts` package: st.html runs in the page itself (no iframe to reach out of, no dependency to
pin against each Streamlit release), and the script is Loupe's own constant text with no outside input in it.
A press does what a click does: the button's own on-click path (and its disabled state) decides. Keys are
ignored while the analyst types in a field, and with Ctrl, Alt or Meta (the browser's own shortcuts).
"""
from __future__ import annotations

import json
import re

import streamlit as st

_WIDGET_KEY = re.compile(r"^[a-z0-9_-]+$")  # Streamlit puts the key in the class name st-key-<key>

_SCRIPT = """<script>
window.loupeKeys = %s;
if (!window.loupeKeysBound) {
  window.loupeKeysBound = true;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    const tag = target && target.tagName ? target.tagName.toLowerCase() : "";
    if (["input", "textarea", "select"].includes(tag) || (target && target.isContentEditable)) return;
    const key = (window.loupeKeys || {})[event.key.toLowerCase()];
    if (!key) return;
    const button = document.querySelector(".st-key-" + key + " button");
    if (button && !button.disabled) {
      event.preventDefault();
      button.click();
    }
  });
}
</script>"""


def bind_keys(bindings: dict[str, str]) -> None:
    """`bindings`: a key ("a", "1", …) → the widget key of the button it clicks, on this page."""
    for key, widget in bindings.items():
        if len(key) != 1 or not _WIDGET_KEY.match(widget):
            raise ValueError(f"Bind one character to a plain widget key (got {key!r} → {widget!r}).")
    st.html(_SCRIPT % json.dumps(bindings), unsafe_allow_javascript=True)
