"""Which NVML devices CUDA shows this process, and in which order, read from CUDA_VISIBLE_DEVICES the way CUDA
reads it, without importing torch or touching CUDA (the pre-flight check runs before either).

CUDA's rules (CUDA programming guide, "CUDA Environment Variables"; MIG user guide, "CUDA Device Enumeration";
nvitop's Device.from_cuda_visible_devices applies the same):
- Unset: every card, in NVML's (nvidia-smi's) order. Set but empty: none.
- Otherwise a comma-separated list, blanks around entries ignored. An entry is a card's NVML index ("1"), a
  card's UUID or any prefix of it that names one card only ("GPU-8932f937"), a MIG device's UUID or unique
  prefix ("MIG-…"), or the older MIG form "MIG-GPU-<card UUID>/<GPU instance>/<compute instance>".
- CUDA reads the list up to the first entry that names no device and ignores the rest: an index with no card,
  "-1", "NoDevFiles" (what some container runtimes set), an unknown or ambiguous UUID. A list is of indices
  or of UUIDs: the first entry of the other kind ends it, and so does a device named twice.
- One process sees one MIG device at most: the first MIG device listed; with none listed, a listed card in
  MIG mode stands for its first MIG device (and the other cards are hidden).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NvmlDevice:
    """One device NVML lists that CUDA_VISIBLE_DEVICES can name: a whole card, or a MIG device on one."""

    index: int  # the card's NVML index (nvidia-smi's); a MIG device carries its card's
    uuid: str  # "GPU-…" for a card, "MIG-…" for a MIG device
    mig_enabled: bool = False  # a card in MIG mode: CUDA shows its MIG devices, never the whole card
    mig_index: int | None = None  # a MIG device's number on its card; None for a whole card
    parent_uuid: str = ""  # a MIG device's card
    instance_ids: tuple[int, int] | None = None  # a MIG device's GPU instance and compute instance ids

    @property
    def is_mig(self) -> bool:
        return self.mig_index is not None


def cuda_order(value: str | None, devices: Sequence[NvmlDevice]) -> tuple[NvmlDevice, ...]:
    """The devices CUDA will number 0, 1, … under CUDA_VISIBLE_DEVICES=`value` (None: the variable is unset)."""
    cards = [d for d in devices if not d.is_mig]
    listed = cards if value is None else _listed(value, cards, [d for d in devices if d.is_mig])
    return _one_mig_at_most(listed, devices)


def _listed(value: str, cards: list[NvmlDevice], migs: list[NvmlDevice]) -> list[NvmlDevice]:
    by_index = {card.index: card for card in cards}
    found: list[NvmlDevice] = []
    kind: bool | None = None  # True: a list of indices; False: of UUIDs
    for entry in (e.strip() for e in value.split(",")):
        is_index = entry.isdigit()
        if kind is not None and is_index != kind:
            break
        if is_index:
            device = by_index.get(int(entry))
        elif entry.startswith("MIG-"):
            device = _legacy_mig(entry, migs) or _by_prefix(entry, migs)
        else:
            device = _by_prefix(entry, cards) if entry.startswith("GPU-") else None
        if device is None or device in found:
            break
        kind = is_index
        found.append(device)
    return found


def _by_prefix(entry: str, pool: list[NvmlDevice]) -> NvmlDevice | None:
    """The one device whose UUID starts with `entry`; None when none or several do."""
    matches = [d for d in pool if d.uuid.lower().startswith(entry.lower())]
    return matches[0] if len(matches) == 1 else None


def _legacy_mig(entry: str, migs: list[NvmlDevice]) -> NvmlDevice | None:
    """'MIG-GPU-<card UUID>/<GI>/<CI>' (drivers before R470 named MIG devices so)."""
    card, _, ids = entry.removeprefix("MIG-").partition("/")
    gi, _, ci = ids.partition("/")
    if not (card.startswith("GPU-") and gi.isdigit() and ci.isdigit()):
        return None
    return next((m for m in migs if m.parent_uuid.lower() == card.lower() and m.instance_ids == (int(gi), int(ci))),
                None)


def _one_mig_at_most(listed: list[NvmlDevice], devices: Sequence[NvmlDevice]) -> tuple[NvmlDevice, ...]:
    migs = [d for d in listed if d.is_mig]
    if migs:
        return (migs[0],)
    for card in listed:
        if card.mig_enabled:
            on_card = sorted((d for d in devices if d.is_mig and d.parent_uuid == card.uuid),
                             key=lambda d: d.mig_index or 0)
            return tuple(on_card[:1])
    return tuple(listed)
