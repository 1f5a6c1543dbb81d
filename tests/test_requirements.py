"""What a fresh machine installs matches what Loupe imports: every third-party module imported at the top level
of a file in core/, dashboard/ or pages/ comes from a distribution pinned (==) in requirements.txt, and every
pin there is imported somewhere (a pin nothing imports is dropped, or says here why it stays)."""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("core", "dashboard", "pages")
OURS = {"core", "dashboard", "pages"}
# Pins that no file imports but that must be installed anyway, with the reason.
NOT_IMPORTED_ON_PURPOSE: dict[str, str] = {}
# Modules Loupe imports only on a GPU machine, where torch's CUDA build installs them at the version it needs
# (a pin in requirements.txt could contradict it); pinned in requirements-dev.txt for the CPU tests.
WITH_TORCH_ON_A_GPU: dict[str, str] = {
    "triton": "core/models/split_decode_attention.py, imported only when the split-KV decode attention runs "
              "(a GPU, or Triton's interpreter in the tests)",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"{path.name}: {line!r} is not pinned with =="
            pins[_normal(name)] = version.strip()
    return pins


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module name → the files that import it (absolute imports of modules outside Loupe)."""
    found: dict[str, set[str]] = {}
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for name in names:
                    top = name.split(".")[0]
                    if top not in OURS and top not in sys.stdlib_module_names and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_pinned() -> None:
    pins = _pins(ROOT / "requirements.txt")
    providers = packages_distributions()
    unpinned = {}
    dev_pins = _pins(ROOT / "requirements-dev.txt")
    for module, files in _third_party_imports().items():
        dists = {_normal(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {sorted(files)}) is not installed in this environment"
        if module in WITH_TORCH_ON_A_GPU:
            assert dists & set(dev_pins), f"{module} is not pinned in requirements-dev.txt"
            continue
        if not dists & set(pins):
            unpinned[module] = (sorted(dists), sorted(files)[:3])
    assert not unpinned, f"imported but not pinned in requirements.txt: {unpinned}"


def test_every_pin_is_imported() -> None:
    providers = packages_distributions()
    imported = {_normal(d) for module in _third_party_imports() for d in providers.get(module, [])}
    unused = set(_pins(ROOT / "requirements.txt")) - imported - set(NOT_IMPORTED_ON_PURPOSE)
    assert not unused, f"pinned in requirements.txt but imported nowhere in {SOURCES}: {sorted(unused)}"


def test_pins_are_what_is_installed() -> None:
    from importlib.metadata import version

    wrong = {name: (pinned, version(name)) for name, pinned in _pins(ROOT / "requirements.txt").items()
             if version(name) != pinned and not version(name).startswith(pinned + "+")}  # torch's "+cpu" build
    assert not wrong, f"requirements.txt pins differ from the tested environment (pinned, installed): {wrong}"
