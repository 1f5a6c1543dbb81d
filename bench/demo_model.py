"""Demo model: build time, load time and one answer's stage timings, as one JSON line.

    python bench/demo_model.py            # writes bench/results/demo_model_<device>.json
"""
from __future__ import annotations

import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> dict:
    import torch
    from PIL import Image

    from core.commands.common import quiet_libraries
    from core.models import demo_model
    from core.serving.engine import load_engine
    from core.settings import load_settings

    quiet_libraries()
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        path = demo_model.build(Path(home) / "models" / demo_model.DEMO_NAME)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        engine = load_engine(load_settings(home=home, model=str(path)))
        load_s = time.perf_counter() - started
        photo = io.BytesIO()
        Image.new("RGB", (4032, 3024), "teal").save(photo, "JPEG")
        engine.ask([photo.getvalue()], "图中有什么？", engine.default_generation(max_new_tokens=16)).collect()  # warm-up
        answer = engine.ask([photo.getvalue()], "图中有什么？", engine.default_generation(max_new_tokens=128)).collect()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or 'x86_64'})"
    record = answer.to_json()
    record.pop("text")
    result = {"device": device, "torch": torch.__version__, "build_s": round(build_s, 3),
              "load_s": round(load_s, 3), "answer": record}
    out = Path(__file__).parent / "results" / f"demo_model_{'cuda' if torch.cuda.is_available() else 'cpu'}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
