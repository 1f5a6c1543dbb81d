"""bench/oom_recovery.py as tests: on a GPU (device run) a real CUDA out-of-memory error inside generation, on the
fast path and on generate(), must be reported, kept in history and recovered from, with the allocator back
exactly; on CPU (CI) the same script runs shortened, so it cannot rot, and the fast path's failure handling is
checked with a host-allocator failure after its prefill."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from core.errors import OutOfMemoryError

_SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "oom_recovery.py"


def _bench():
    spec = importlib.util.spec_from_file_location("oom_recovery_bench", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(result: dict) -> None:
    assert (result["burst"]["answered"], result["burst"]["errors"]) == (3, 0)
    oom = result["oom"]
    assert oom["error_type"] == "OutOfMemoryError" and "ran out of memory" in oom["message"]
    assert oom["held_activation_freed"] and oom["returned_to_baseline"]
    assert oom["next_request_ok"] and oom["model_still_loaded"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_out_of_memory_on_the_fast_path_and_generate_is_recovered() -> None:
    """The card filled so the question's prefill cannot fit: a real torch.OutOfMemoryError inside generation, on
    both paths; the analyst gets OutOfMemoryError kept in history, memory comes back, the same answer follows.
    Writes bench/results/oom_recovery.json (the device run's record)."""
    import tempfile

    result = _bench().main(["--device", "cuda", "--workdir", tempfile.gettempdir()])
    assert "error" not in result, result
    assert (result["burst"]["answered"], result["burst"]["errors"]) == (3, 0), result["burst"]
    assert abs(result["sequential"]["growth_bytes"]) <= 2**20, result["sequential"]
    for path in ("fast_decode", "generate"):
        oom = result["oom_paths"][path]
        assert "error" not in oom, (path, oom)
        assert oom["exercised"] and oom["error_type"] == "torch.OutOfMemoryError", (path, oom)
        assert oom["failed_inside_generation"], (path, oom)
        assert oom["loupe_error_type"] == "OutOfMemoryError" and "GPU ran out of memory" in oom["loupe_message"]
        assert oom["history"] == {"status": "failed", "error_type": "OutOfMemoryError"}, (path, oom)
        assert oom["returned_to_baseline"], (path, oom)
        assert oom["model_still_loaded"] and oom["fast_decoder_still_loaded"], (path, oom)
        assert oom["next_request_ok"] and oom["same_answer"], (path, oom)


def test_oom_recovery_script_runs_on_cpu() -> None:
    result = _bench().run("cpu", sequential=3)
    _check(result)
    assert "machine ran out of memory" in result["oom"]["message"]


def test_out_of_memory_after_prefill_on_the_fast_path_is_kept_in_history_and_frees_the_prompt(engine, tmp_path) -> None:
    """The fast path fails after its prefill (the first token's logits: a real host-allocator failure raised
    inside lm_head on the decoder's thread): the analyst's entry is kept as failed with the typed error, the
    prompt's hidden states are freed, the model stays loaded and the same question then gets the same answer."""
    import weakref

    from core.history import HistoryStore
    from core.inputs.samples import by_id as sample
    from core.serving.recorded_ask import AskRequest, ImageUpload, ask_and_record

    backend = engine.backend
    decoder = backend.fast_decoder
    assert decoder is not None
    store = HistoryStore(tmp_path / "history.sqlite3")
    request = AskRequest(session_id="0123456789ab", page="documents", question="What is in the image?",
                         images=(ImageUpload(sample("document-table").read(), "document-table"),),
                         generation=engine.default_generation(max_new_tokens=8))
    before = ask_and_record(engine, store, request).run().answer
    prompt_states: list[weakref.ref] = []

    def first_token_fails(_module, args, _output) -> None:
        on_fast_path = args[0]._base is decoder._prefill_hidden
        prompt_states.append(weakref.ref(args[0]._base))
        if on_fast_path:
            torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: the host allocator refuses

    handle = backend.model.lm_head.register_forward_hook(first_token_fails)
    try:
        failing = ask_and_record(engine, store, request)
        with pytest.raises(OutOfMemoryError, match="ran out of memory"):
            failing.run()
    finally:
        handle.remove()
    assert prompt_states, "the hook never ran: the question did not reach the first token"
    entry = store.get(failing.entry.id)
    assert (entry.status, entry.error_type) == ("failed", "OutOfMemoryError") and "still loaded" in entry.error
    assert prompt_states[0]() is None, "the failed request's prompt states are still held"
    assert backend.model is not None
    after = ask_and_record(engine, store, request).run().answer
    assert after.text == before.text and after.output_tokens == before.output_tokens
