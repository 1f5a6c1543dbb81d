"""Inputs: what an analyst hands Loupe before any model runs — images (decoded, EXIF-oriented, resized),
questions (checked in characters), prompt templates (data in assets/templates/) and the sample images.

Owns turning outside bytes and text into validated records. May import core.errors, core.records and
core.settings only: nothing here loads torch or a model.
"""
