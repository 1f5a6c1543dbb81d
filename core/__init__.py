"""Loupe's engine: everything that is not drawing. Importable and testable without Streamlit."""
import os

# Loupe never downloads weights or data at run time; this must be set before huggingface_hub is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
