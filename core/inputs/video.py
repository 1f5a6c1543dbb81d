"""A video as InternLM-XComposer2.5 takes it: sampled frames tiled into one labelled image.

What the model's own code does (its ixc_utils.py; read for the facts, none of its code is used here):
- one frame a second (every round(fps)-th frame); more than 32 such frames are thinned to 32, evenly spread
  (step = candidates / 33, frames at int(i · step));
- each frame resized to 1120 px (2 × 560) on its long side; landscape frames stacked top to bottom, portrait
  ones left to right, each under (or beside) a 40-px band labelled "<IMAGE i>" (size 40, black on white),
  10 px apart with a 2-px black line between neighbours;
- that tile scaled to 560 px on its short side and padded with white to a multiple of 560 on its long side:
  a 1 × n strip of 560-px crops, the model's own input (its video path skips the photo HD transform).
Differences, chosen here: frames are decoded with PyAV (no decord); the labels are drawn with Pillow's
built-in font (Aileron, shipped inside Pillow) because the model's code downloads SimHei at start-up; and
the strip then goes through the backend's HD transform like any image, which leaves it unchanged while it
has at most hd_num crops (24 for one image) and scales it down past that (a note says so). The 1280-px
width limit for photos does not apply: the strip is already at the model's resolution, and capping a
left-to-right strip of 32 portrait frames at 1280 px would shrink every frame about nine times.
"""
from __future__ import annotations

import hashlib
import io
import math
import time
from pathlib import PurePath

from PIL import Image, ImageDraw, ImageFont

from core.errors import ImageError
from core.messages import MessageText
from core.records import PreparedImage

VIDEO_SUFFIXES = {".mp4": "MP4", ".webm": "WEBM", ".mov": "MOV"}
MAX_FRAMES = 32  # the model's default frame count
FRAME_SIDE = 1120  # frames are resized to 2 × 560 px on their long side
CROP = 560
LABEL_BAND = 40
GAP = 10
LABEL_SIZE = 40
ONE_IMAGE_CROPS = 24  # the HD transform's crop budget for a question with one image

NO_VIDEO_STREAM = MessageText("video.no_video_stream", "This file has no video stream.")
NO_FRAMES = MessageText("video.no_frames", "This video states no frame rate or holds no frames.")
NOT_A_VIDEO = MessageText("video.not_a_video", "This file is not a video Loupe can read, or it is damaged ({reason}).")
NO_FRAME_DECODED = MessageText("video.no_frame_decoded", "No frame of this video could be decoded.")
NOT_A_VIDEO_NAME = MessageText("video.not_a_video_name", "{name} is not a video Loupe takes (accepted: mp4, webm, mov).")
EMPTY_VIDEO = MessageText("video.empty_file", "The video file is empty.")
SAMPLED = MessageText("video.sampled", "video: {frames} frames sampled from {seconds:.1f} s ({fps:.1f} fps): one a "
                                       "second, at most {max_frames}, evenly spread")
_LABELS = "with labels {labels} (Pillow's built-in font; the model's code draws them in SimHei)"
TILED_TOP_TO_BOTTOM = MessageText("video.tiled_top_to_bottom",
                                  "frames resized to {side} px on the long side, tiled top to bottom " + _LABELS)
TILED_LEFT_TO_RIGHT = MessageText("video.tiled_left_to_right",
                                  "frames resized to {side} px on the long side, tiled left to right " + _LABELS)
STRIP = MessageText("video.strip", "tiled image scaled to {crop} px on its short side: {width}×{height}, {crops} crops "
                                   "of {crop} px (not capped at the 1280 px width limit for photos)")
TOO_MANY_CROPS = MessageText("video.too_many_crops", "{crops} crops is more than the {limit} the model takes for one "
                                                     "image: it scales the strip down (its own code would not)")


def is_video_name(name: str) -> bool:
    return PurePath(name).suffix.lower() in VIDEO_SUFFIXES


def sample_indices(frame_count: int, fps: float, max_frames: int = MAX_FRAMES) -> list[int]:
    """Indices of the frames the model's code keeps: one a second, thinned evenly to at most `max_frames`."""
    stride = max(1, round(fps))
    candidates = list(range(0, frame_count, stride))
    if len(candidates) > max_frames:
        step = len(candidates) / (max_frames + 1)
        candidates = [candidates[int(i * step)] for i in range(max_frames)]
    return candidates


def _decode(data: bytes, max_frames: int) -> tuple[list[Image.Image], int, float]:
    """(sampled frames as RGB images, frames in the stream, frames a second), with PyAV, in two passes:
    counting packets costs no decoding, so only the sampled frames are ever converted to images."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ImageError(NO_VIDEO_STREAM())
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        if fps <= 0 or count <= 0:
            raise ImageError(NO_FRAMES())
        wanted = set(sample_indices(count, fps, max_frames))
        frames: list[Image.Image] = []
        with av.open(io.BytesIO(data), mode="r") as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    frames.append(frame.to_image().convert("RGB"))
                if index >= max(wanted):
                    break
    except av.error.FFmpegError as exc:
        raise ImageError(NOT_A_VIDEO(reason=str(exc.strerror))) from None
    if not frames:
        raise ImageError(NO_FRAME_DECODED())
    return frames, count, fps


def _label_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=LABEL_SIZE)


def tile_frames(frames: list[Image.Image]) -> tuple[Image.Image, bool]:
    """The frames under their labels in one image (see the module docstring); True when stacked top to bottom."""
    width, height = frames[-1].size  # the model's code decides by the last frame's shape
    stacked = width > height
    resized = []
    for frame in frames:
        aspect = frame.width / frame.height
        size = (FRAME_SIDE, int(FRAME_SIDE / aspect)) if stacked else (int(FRAME_SIDE * aspect), FRAME_SIDE)
        resized.append(frame.resize(size, Image.Resampling.BILINEAR))
    font = _label_font()
    if stacked:
        canvas = Image.new("RGB", (max(f.width for f in resized), sum(f.height + GAP + LABEL_BAND for f in resized)),
                           "white")
    else:
        canvas = Image.new("RGB", (sum(f.width + GAP for f in resized), max(f.height for f in resized) + LABEL_BAND),
                           "white")
    draw = ImageDraw.Draw(canvas)
    offset = 0
    for index, frame in enumerate(resized):
        last = index + 1 == len(resized)
        if stacked:
            canvas.paste(frame, (0, offset + LABEL_BAND))
            draw.text((0, offset), f"<IMAGE {index}>", font=font, fill="black")
            line = offset + LABEL_BAND + frame.height + GAP // 2
            if not last:
                draw.line([(0, line), (canvas.width, line)], fill="black", width=2)
            offset += frame.height + GAP + LABEL_BAND
        else:
            canvas.paste(frame, (offset, LABEL_BAND))
            draw.text((offset, 0), f"<IMAGE {index}>", font=font, fill="black")
            line = offset + frame.width + GAP // 2
            if not last:
                draw.line([(line, 0), (line, canvas.height)], fill="black", width=2)
            offset += frame.width + GAP
    return canvas, stacked


def to_crop_strip(tile: Image.Image) -> Image.Image:
    """The tile at 560 px on its short side, padded with white at its far end to a multiple of 560."""
    portrait = tile.width < tile.height
    long_side, short_side = (tile.height, tile.width) if portrait else (tile.width, tile.height)
    scaled_long = int(CROP * (long_side / short_side))
    size = (CROP, scaled_long) if portrait else (scaled_long, CROP)
    scaled = tile.resize(size, Image.Resampling.BILINEAR)
    padded_long = math.ceil(scaled_long / CROP) * CROP
    strip = Image.new("RGB", (CROP, padded_long) if portrait else (padded_long, CROP), "white")
    strip.paste(scaled, (0, 0))
    return strip


def prepare_video(data: bytes, *, name: str, max_frames: int = MAX_FRAMES) -> PreparedImage:
    """The clip in `data` (an .mp4, .webm or .mov upload called `name`) as one PreparedImage, with notes."""
    started = time.perf_counter()
    suffix = PurePath(name).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ImageError(NOT_A_VIDEO_NAME(name=name))
    if not data:
        raise ImageError(EMPTY_VIDEO())
    frames, count, fps = _decode(data, max_frames)
    tile, stacked = tile_frames(frames)
    strip = to_crop_strip(tile)
    crops = max(strip.size) // CROP
    notes = [
        SAMPLED(frames=len(frames), seconds=count / fps, fps=fps, max_frames=max_frames),
        (TILED_TOP_TO_BOTTOM if stacked else TILED_LEFT_TO_RIGHT)(side=FRAME_SIDE,
                                                               labels=f"<IMAGE 0>…<IMAGE {len(frames) - 1}>"),
        STRIP(crop=CROP, width=strip.width, height=strip.height, crops=crops),
    ]
    if crops > ONE_IMAGE_CROPS:
        notes.append(TOO_MANY_CROPS(crops=crops, limit=ONE_IMAGE_CROPS))
    return PreparedImage(image=strip, notes=tuple(n.text for n in notes), note_messages=tuple(notes),
                         source_format=VIDEO_SUFFIXES[suffix],
                         original_size=frames[0].size, sha256=hashlib.sha256(data).hexdigest(),
                         prepare_s=time.perf_counter() - started, frames=len(frames))
