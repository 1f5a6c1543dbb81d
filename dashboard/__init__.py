"""Loupe's Streamlit UI: the entry point (app.py) and the widgets the pages share."""
