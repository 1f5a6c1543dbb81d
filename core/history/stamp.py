"""The reproducibility stamp every history row carries, and what differs between two of them.

A re-run compares the original's stamp with the one it ran under and lists each difference in words
("dtype: float32 → bfloat16"), so an analyst knows whether a changed answer can be blamed on the model,
the settings or the library versions.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from core.records import GenerationSettings, ModelCard


@dataclass(frozen=True)
class ReproStamp:
    """What produced an answer: model, backend, numerics, shard layout, generation settings, versions."""

    model: str
    backend: str
    dtype: str
    attn_implementation: str
    device: str
    device_map: str  # ModelCard.device_map_summary: layers and GB per GPU, or "cpu"
    generation: dict[str, Any]
    max_width: int  # images are prepared to at most this width
    torch: str
    transformers: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def make_stamp(card: ModelCard, generation: GenerationSettings, *, max_width: int) -> ReproStamp:
    return ReproStamp(
        model=card.name, backend=card.backend, dtype=card.dtype, attn_implementation=card.attn_implementation,
        device=card.device, device_map=card.device_map_summary, generation=generation.to_dict(),
        max_width=max_width, torch=_version("torch"), transformers=_version("transformers"),
    )


def _flat(stamp: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in stamp.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(original: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """Every key whose value differs, as 'key: old → new' (missing on one side shows as '—')."""
    old, new = _flat(original), _flat(current)
    return [
        f"{key}: {old.get(key, '—')} → {new.get(key, '—')}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
