"""Widgets the pages share: the model resource and card, the answer panel, charts."""
