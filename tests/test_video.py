"""Video as InternLM-XComposer2.5 takes it: frames sampled once a second (at most 32), tiled with labels into
one image at the model's 560-px crop size; tiny clips are written here with PyAV, nothing is downloaded."""
from __future__ import annotations

import dataclasses
import io

import av
import numpy as np
import pytest
from PIL import Image

from core.errors import ImageError, QuestionError
from core.inputs import video
from tests.image_factory import encode

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 200, 20), (200, 40, 200)]


def clip(container: str = "mp4", codec: str = "mpeg4", *, seconds: int = 5, fps: int = 4,
         size: tuple[int, int] = (64, 48)) -> bytes:
    """A clip whose every second has one colour (COLOURS, in turn)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(seconds * fps):
            colour = COLOURS[(index // fps) % len(COLOURS)]
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), colour, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def test_sampling_follows_the_models_rule() -> None:
    assert video.sample_indices(20, 4.0) == [0, 4, 8, 12, 16]  # one frame a second
    assert video.sample_indices(10, 29.97) == [0]  # stride round(29.97) = 30
    # 50 one-a-second candidates, more than 32: 32 of them spread with step 50 / 33.
    picked = video.sample_indices(100, 2.0)
    assert len(picked) == 32 and picked[:4] == [0, 2, 6, 8] and picked[-1] == 92
    assert video.sample_indices(100, 2.0, max_frames=4) == [0, 20, 40, 60]


@pytest.mark.parametrize(("container", "codec", "label"), [("mp4", "mpeg4", "MP4"), ("webm", "libvpx", "WEBM"),
                                                           ("mov", "mpeg4", "MOV")])
def test_a_clip_becomes_one_tiled_image_of_560_px_crops(container: str, codec: str, label: str) -> None:
    prepared = video.prepare_video(clip(container, codec), name=f"clip.{container}")
    assert prepared.is_video and prepared.frames == 5 and prepared.source_format == label
    assert prepared.original_size == (64, 48)
    # 5 frames of 1120x840 under 40-px label bands, 10 px apart: 1120 x 4450, short side to 560, padded.
    assert prepared.image.size == (560, 2240) and prepared.image.mode == "RGB"
    pixels = np.asarray(prepared.image).astype(int)
    for index, colour in enumerate(COLOURS):
        top = round((40 + index * 890) * 560 / 1120)  # the frame's top edge after the halving
        middle = pixels[top + 200, 280]
        assert np.abs(middle - np.array(colour)).max() < 40, (index, middle)
        band = pixels[round(index * 890 * 0.5): top, :150]
        assert band.min() < 100 and band.max() > 200  # a dark label on white
    assert (pixels[2230:, :] == 255).all()  # white padding at the bottom
    assert prepared.notes == (
        "video: 5 frames sampled from 5.0 s (4.0 fps): one a second, at most 32, evenly spread",
        "frames resized to 1120 px on the long side, tiled top to bottom with labels <IMAGE 0>…<IMAGE 4> "
        "(Pillow's built-in font; the model's code draws them in SimHei)",
        "tiled image scaled to 560 px on its short side: 560×2240, 4 crops of 560 px (not capped at the 1280 px "
        "width limit for photos)",
    )


def test_portrait_frames_are_tiled_side_by_side() -> None:
    prepared = video.prepare_video(clip(size=(48, 64), seconds=3), name="tall.mp4")
    assert prepared.frames == 3 and prepared.image.height == 560 and prepared.image.width % 560 == 0
    assert "tiled left to right" in prepared.notes[1]


def test_what_is_not_a_usable_video_is_refused() -> None:
    with pytest.raises(ImageError, match="not a video Loupe can read"):
        video.prepare_video(b"this is text", name="notes.mp4")
    with pytest.raises(ImageError, match="empty"):
        video.prepare_video(b"", name="empty.mp4")
    with pytest.raises(ImageError, match="accepted: mp4, webm, mov"):
        video.prepare_video(clip(), name="clip.avi")
    assert video.is_video_name("a.MOV") and video.is_video_name("b.webm") and not video.is_video_name("c.png")


def test_a_model_without_video_refuses_it_with_a_clear_message(engine) -> None:
    prepared = video.prepare_video(clip(seconds=2), name="clip.mp4")
    query = engine.build_query([encode(Image.new("RGB", (32, 32)), "PNG")], "What happens?")
    with pytest.raises(QuestionError) as refused:
        engine.backend.encode(dataclasses.replace(query, images=(prepared,)))
    assert str(refused.value).startswith("The transformers backend's model cannot take a video")
