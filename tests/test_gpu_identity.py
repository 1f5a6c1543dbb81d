"""GPU identity under CUDA_VISIBLE_DEVICES: indices, UUIDs and their prefixes, MIG devices, invalid entries, empty.

There is no GPU on CI, so NVML is a small stand-in module (the query functions the one GPU reader calls, over a
list of cards); everything above it (the reader, the pre-flight check) is the real code.
"""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

from core.models import preflight
from core.telemetry import gpu_reader, nvml
from core.telemetry.cuda_visible import NvmlDevice, cuda_order
from core.telemetry.snapshots import GpuSnapshot

A = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
B = "GPU-8932aaaa-0000-4106-c12f-20bd9faed9f6"  # shares "GPU-8932" with A
C = "GPU-c0ffee00-1111-2222-3333-444455556666"
MIG_C0 = "MIG-11111111-aaaa-bbbb-cccc-000000000000"
MIG_C1 = "MIG-22222222-aaaa-bbbb-cccc-000000000000"

CARDS = (NvmlDevice(0, A), NvmlDevice(1, B), NvmlDevice(2, C))


def order(value: str | None, devices=CARDS) -> list[int | str]:
    return [d.uuid if d.is_mig else d.index for d in cuda_order(value, devices)]


@pytest.mark.parametrize(("value", "expected"), [
    (None, [0, 1, 2]),  # unset: every card
    ("2,0", [2, 0]),  # CUDA's order is the list's
    (" 1 , 2 ", [1, 2]),  # blanks around entries
    ("0,2,-1,1", [0, 2]),  # CUDA stops at the first invalid entry (the guide's own example)
    ("0,7,1", [0]),  # an index with no card is invalid
    ("0,0,1", [0]),  # a card named twice ends the list
    ("", []), ("-1", []), ("NoDevFiles", []),  # nothing visible
    (C, [2]),  # a full UUID
    ("GPU-c0ff," + A, [2, 0]),  # unique prefixes
    ("GPU-8932", []),  # ambiguous prefix (A and B): invalid, and nothing before it
    (f"GPU-c0ff,GPU-8932,{A}", [2]),  # ... and it ends the list
    ("GPU-ffffffff", []),  # unknown UUID
    (f"{C},0", [2]),  # UUIDs then an index: the list ends at the change of kind
    (f"1,{C}", [1]),  # ... and the other way round
])
def test_cuda_order_of_whole_cards(value: str | None, expected: list[int]) -> None:
    assert order(value) == expected


MIG_SYSTEM = (
    NvmlDevice(0, A), NvmlDevice(1, C, mig_enabled=True),
    NvmlDevice(1, MIG_C1, mig_index=1, parent_uuid=C, instance_ids=(2, 0)),
    NvmlDevice(1, MIG_C0, mig_index=0, parent_uuid=C, instance_ids=(1, 0)),
)


@pytest.mark.parametrize(("value", "expected"), [
    (MIG_C1, [MIG_C1]),
    ("MIG-2222", [MIG_C1]),  # a prefix of a MIG UUID
    (f"{MIG_C1},{MIG_C0}", [MIG_C1]),  # one MIG device per process: the first listed
    (f"{A},{MIG_C0}", [MIG_C0]),  # a MIG device listed hides the whole cards
    (f"MIG-{C}/1/0", [MIG_C0]),  # the pre-R470 form: card UUID / GPU instance / compute instance
    (f"MIG-{C}/9/0", []),  # no such instance
    ("1", [MIG_C0]),  # a card in MIG mode stands for its first MIG device
    ("0", [0]),
    (None, [MIG_C0]),  # unset, with a card in MIG mode
])
def test_cuda_order_with_mig(value: str | None, expected: list[int | str]) -> None:
    assert order(value, MIG_SYSTEM) == expected


# -- the one GPU reader over a stand-in NVML ---------------------------------------------------------------
class FakeNvmlError(Exception):
    pass


@dataclass
class FakeCard:
    uuid: str
    name: str
    total: int
    used: int
    migs: list[FakeCard] = field(default_factory=list)
    instance_ids: tuple[int, int] = (0, 0)


def fake_pynvml(cards: list[FakeCard]) -> types.ModuleType:
    """The NVML functions the reader calls, over `cards` (handles are the FakeCard objects)."""
    module = types.ModuleType("pynvml")
    mem = types.SimpleNamespace

    def refuse(*_args: object) -> object:
        raise FakeNvmlError("not supported")

    def mig_handle(card: FakeCard, i: int) -> FakeCard:
        if i >= len(card.migs):
            raise FakeNvmlError("not found")
        return card.migs[i]

    module.__dict__.update(
        NVMLError=FakeNvmlError, NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetCount=lambda: len(cards), nvmlDeviceGetHandleByIndex=lambda i: cards[i],
        nvmlDeviceGetName=lambda h: h.name, nvmlDeviceGetUUID=lambda h: h.uuid.encode(),
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlDeviceGetMemoryInfo=lambda h: mem(total=h.total, used=h.used, free=h.total - h.used),
        nvmlDeviceGetUtilizationRates=lambda h: mem(gpu=7), nvmlDeviceGetPowerUsage=lambda h: 100_000,
        nvmlDeviceGetTemperature=lambda h, _sensor: 40, nvmlDeviceGetComputeRunningProcesses=lambda h: [],
        nvmlDeviceGetMigMode=lambda h: (1, 1) if h.migs else refuse(),
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 7, nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
        nvmlDeviceGetGpuInstanceId=lambda h: h.instance_ids[0], nvmlDeviceGetComputeInstanceId=lambda h: h.instance_ids[1],
    )
    return module


GB = 10**9
MACHINE = [
    FakeCard(A, "NVIDIA H200", 140 * GB, 100 * GB),
    FakeCard(B, "NVIDIA H200", 140 * GB, 10 * GB),
    FakeCard(C, "NVIDIA A100-SXM4-40GB", 40 * GB, 0, migs=[
        FakeCard(MIG_C0, "NVIDIA A100-SXM4-40GB MIG 3g.20gb", 20 * GB, 1 * GB, instance_ids=(1, 0)),
        FakeCard(MIG_C1, "NVIDIA A100-SXM4-40GB MIG 3g.20gb", 20 * GB, 2 * GB, instance_ids=(2, 0))]),
]


@pytest.fixture
def fake_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(MACHINE))
    monkeypatch.setattr(nvml, "_state", "ok")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_reader_reads_every_card_with_its_uuid_and_cuda_number(fake_machine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8932a,GPU-8932f")  # B then A
    cards = gpu_reader.read_gpus()
    assert [(g.index, g.uuid, g.cuda_index) for g in cards] == [(0, A, 1), (1, B, 0), (2, C, None)]
    assert cards[0].used_bytes == 100 * GB and cards[0].name == "NVIDIA H200"


@pytest.mark.parametrize(("value", "expected"), [
    ("GPU-8932a,GPU-8932f", [(B, 130), (A, 40)]),  # by UUID prefix: B is CUDA's device 0
    ("1,0", [(B, 130), (A, 40)]),
    ("0,5,1", [(A, 40)]),
    (MIG_C1, [(MIG_C1, 18)]),  # a MIG device: its own memory, not the card's
    ("NoDevFiles", []),
])
def test_preflight_offers_the_devices_cuda_will_use(fake_machine, monkeypatch: pytest.MonkeyPatch,
                                                     value: str, expected: list[tuple[str, int]]) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    visible = gpu_reader.read_visible()
    assert [(g.uuid, (g.free_bytes or 0) // GB) for g in visible] == expected
    assert [g.index for g in visible] == list(range(len(expected)))  # numbered as CUDA numbers them


def test_given_figures_follow_uuids_too(monkeypatch: pytest.MonkeyPatch) -> None:
    given = (GpuSnapshot(0, "x", uuid=A, free_bytes=1), GpuSnapshot(1, "y", uuid=C, free_bytes=2))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-c0ff")
    (only,) = preflight.visible_gpus(given)
    assert (only.uuid, only.index, only.free_bytes) == (C, 0, 2)


def test_gpus_json_names_each_card_as_nvml_and_cuda_do(fake_machine, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.telemetry import readout
    from core.telemetry.sampler import read_sample

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    cards = readout.gpus_json(read_sample(), "ok")["gpus"]
    assert [(c["index"], c["uuid"], c["cuda_index"]) for c in cards] == [(0, A, 1), (1, B, 0), (2, C, None)]
