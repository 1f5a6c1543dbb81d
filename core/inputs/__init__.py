"""Inputs: what an analyst hands Loupe before any model runs — images (decoded, EXIF-oriented, resized),
videos (sampled frames tiled into one image, video.py), questions (checked in characters), earlier turns of
a conversation (conversation.py), prompt templates (data in assets/templates/) and the sample images; and
moderation, the reader of what a moderation template asks the model for (answer text → Verdict, pure text
work, so history, serving and analysis can all use it).

Owns turning outside bytes and text into validated records. May import core.errors, core.messages,
core.records, core.statuses and core.settings only: nothing here loads torch or a model.
"""
