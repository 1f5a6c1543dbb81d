"""What a remote engine serves (its /v1/models listing) and whether it answers: the model Loupe asks, and
the health that Loupe's own /health and model card report for a remote model instead of local GPUs.

Decisions:
- The model is chosen by id: the setting `remote_model` (else `model`, as before) must be one the server
  lists; when neither is set, the server's only model is used, and a server with several is refused with a
  message listing them (the first one listed is not a choice the analyst made).
- vLLM's listing carries `max_model_len` and `root` (the folder it loaded), LMDeploy's `root` and
  `permission`: whatever of these a server gives is shown with the model, nothing is required beyond `id`.
- Health is one GET of /v1/models (every OpenAI-compatible engine has it; vLLM's and LMDeploy's /health
  live outside /v1 and another Loupe's says nothing about the model), bounded by a short timeout, no retries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from core.errors import ModelError


@dataclass(frozen=True)
class ServedModel:
    """One entry of a server's /v1/models listing."""

    id: str
    owned_by: str = ""
    root: str = ""  # the folder or hub id the engine loaded (vLLM, LMDeploy)
    max_model_len: int | None = None  # the context length the engine allows (vLLM)

    def describe(self) -> str:
        extras = [f"max_model_len {self.max_model_len}"] if self.max_model_len else []
        if self.root and self.root != self.id:
            extras.append(f"from {self.root}")
        return self.id + (f" ({', '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class RemoteHealth:
    """One look at the remote engine: reachable or not, what it serves, how long the look took."""

    base_url: str
    reachable: bool
    model: str  # the model Loupe asks
    served: tuple[str, ...]  # ids the server listed
    checked_in_s: float
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "reachable": self.reachable, "model": self.model,
                "served": list(self.served), "model_listed": self.model in self.served,
                "checked_in_s": round(self.checked_in_s, 3), "error": self.error}


def parse_listing(payload: object, base_url: str) -> tuple[ServedModel, ...]:
    """The models of a /v1/models answer; a body in another shape is refused as not OpenAI-compatible."""
    entries = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries):
        raise ModelError(f"{base_url}/models did not answer like an OpenAI-compatible server (no list of models "
                         "with ids); check openai_base_url (it usually ends in /v1).")
    served = []
    for entry in entries:
        length = entry.get("max_model_len")
        served.append(ServedModel(id=entry["id"], owned_by=str(entry.get("owned_by") or ""),
                                  root=str(entry.get("root") or ""),
                                  max_model_len=length if isinstance(length, int) and not isinstance(length, bool)
                                  else None))
    return tuple(served)


def choose(served: tuple[ServedModel, ...], wanted: str, base_url: str) -> ServedModel:
    """The served model with id `wanted`, or the only one when `wanted` is empty."""
    listed = ", ".join(m.id for m in served) or "nothing"
    if wanted:
        for model in served:
            if model.id == wanted:
                return model
        raise ModelError(f"The remote server {base_url} has no model '{wanted}'; it serves: {listed}. "
                         "Set remote_model to one of these.")
    if len(served) == 1:
        return served[0]
    if not served:
        raise ModelError(f"The remote server {base_url} serves no model yet (its /v1/models is empty).")
    raise ModelError(f"The remote server {base_url} serves {len(served)} models: {listed}. Set remote_model to "
                     "the one to ask.")


def timed(check: Any) -> tuple[Any, float]:
    """Run `check()` and return (its result, seconds it took)."""
    started = time.perf_counter()
    result = check()
    return result, time.perf_counter() - started
