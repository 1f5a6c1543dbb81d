"""Draw the sample images in assets/samples/ (run: python assets/make_samples.py [OUT_DIR]).

Deterministic: every random choice comes from a seeded random.Random, so the same Pillow and FreeType
give the same bytes. Chinese text is drawn with Noto Sans/Serif CJK SC (Debian's fonts-noto-cjk); the
script refuses to run without it rather than drawing boxes. The outputs are committed, so the app
itself never needs the font.
"""
from __future__ import annotations

import io
import math
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = Path("/usr/share/fonts/opentype/noto")
SANS, SANS_BOLD, SERIF = "NotoSansCJK-Regular.ttc", "NotoSansCJK-Bold.ttc", "NotoSerifCJK-Regular.ttc"
SC = 2  # face index of the Simplified Chinese face in the Noto CJK collections
OUT_DIR = Path(__file__).resolve().parent / "samples"
INK, RED = (28, 52, 140), (200, 30, 30)


def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    path = FONT_DIR / name
    if not path.is_file():
        raise SystemExit(f"{path} is missing: install Debian's fonts-noto-cjk (apt-get install fonts-noto-cjk)")
    return ImageFont.truetype(str(path), size, index=SC)


def handwrite(canvas: Image.Image, xy: tuple[int, int], text: str, size: int, colour: tuple[int, int, int],
              rng: random.Random) -> None:
    """Text that looks written by hand: each character jittered, tilted, resized and unevenly inked.
    `xy` is the left end of the baseline."""
    x, y = xy
    cell = int(size * 1.8)
    for char in text:
        if char == " ":
            x += size // 3
            continue
        face = font(SANS if rng.random() < 0.7 else SANS_BOLD, int(size * rng.uniform(0.88, 1.12)))
        # Draw on the baseline of a fixed cell and rotate about its centre, so baselines stay aligned.
        glyph = Image.new("L", (cell, cell), 0)
        draw = ImageDraw.Draw(glyph)
        origin = (cell // 4, int(cell * 0.72))
        draw.text(origin, char, font=face, fill=255, anchor="ls")
        draw.text((origin[0] + rng.choice((0, 1)), origin[1] + rng.choice((0, 1))), char, font=face, fill=200,
                  anchor="ls")
        glyph = glyph.rotate(rng.uniform(-7, 7), resample=Image.BICUBIC)
        ink = Image.new("RGB", glyph.size, colour)
        canvas.paste(ink, (x - cell // 4 + rng.randint(-2, 2), y - int(cell * 0.72) + rng.randint(-3, 3)), glyph)
        x += int(face.getlength(char) * rng.uniform(0.92, 1.05)) + rng.randint(0, 3)


def wobbly_line(draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float],
                colour: tuple[int, int, int], width: int, rng: random.Random) -> None:
    steps = 24
    points = []
    for i in range(steps + 1):
        t = i / steps
        wobble = math.sin(t * math.pi) * rng.uniform(-2.5, 2.5)
        points.append((start[0] + (end[0] - start[0]) * t + wobble, start[1] + (end[1] - start[1]) * t + wobble))
    draw.line(points, fill=colour, width=width, joint="curve")


def add_noise(image: Image.Image, seed: int, sigma: float) -> Image.Image:
    """Sensor grain from a seeded generator (Pillow's effect_noise is not seedable)."""
    pixels = np.asarray(image, dtype=np.float32)
    grain = np.random.default_rng(seed).normal(0.0, sigma, pixels.shape[:2])[..., None]
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8), "RGB")


def document_table() -> Image.Image:
    """A PDF viewer screenshot: title, regional sales table with totals, note, signature bottom right."""
    rng = random.Random(1)
    image = Image.new("RGB", (1240, 860), (236, 238, 242))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1240, 44), fill=(52, 58, 70))
    draw.text((20, 9), "2024Q3_区域销售报表.pdf — 第 1 页 / 共 3 页", font=font(SANS, 18), fill=(230, 232, 236))
    draw.text((1140, 9), "100%", font=font(SANS, 18), fill=(200, 204, 210))
    draw.rectangle((90, 64, 1150, 850), fill="white", outline=(210, 212, 218))
    draw.text((620, 110), "2024年第三季度区域销售报表", font=font(SANS_BOLD, 38), fill=(20, 20, 20), anchor="mm")
    draw.text((620, 156), "Q3 2024 Regional Sales Report · 单位：万元 (10k CNY)", font=font(SANS, 20),
              fill=(90, 90, 90), anchor="mm")
    header = ["地区 Region", "七月 Jul", "八月 Aug", "九月 Sep", "合计 Total"]
    rows = [("华东 East", [128.5, 136.2, 141.0]), ("华南 South", [97.3, 102.8, 99.6]),
            ("华北 North", [88.1, 91.4, 95.2]), ("西南 Southwest", [54.6, 58.9, 63.3])]
    table = [header] + [[name, *(f"{v:.1f}" for v in vals), f"{sum(vals):.1f}"] for name, vals in rows]
    monthly = [sum(vals[i] for _n, vals in rows) for i in range(3)]
    table.append(["合计 Total", *(f"{v:.1f}" for v in monthly), f"{sum(monthly):.1f}"])
    left, top, widths, height = 150, 200, [250, 170, 170, 170, 180], 62
    cell_font, bold = font(SANS, 22), font(SANS_BOLD, 22)
    for r, row in enumerate(table):
        y = top + r * height
        fill = (226, 234, 248) if r == 0 else (246, 247, 250) if r == len(table) - 1 else "white"
        draw.rectangle((left, y, left + sum(widths), y + height), fill=fill)
        x = left
        for c, text in enumerate(row):
            anchor_x = x + 18 if c == 0 else x + widths[c] - 18
            draw.text((anchor_x, y + height / 2), text, font=bold if r in (0, len(table) - 1) else cell_font,
                      fill=(25, 25, 25), anchor="lm" if c == 0 else "rm")
            x += widths[c]
    for r in range(len(table) + 1):
        draw.line((left, top + r * height, left + sum(widths), top + r * height), fill=(150, 156, 170), width=2)
    x = left
    for w in [0, *widths]:
        x += w
        draw.line((x, top, x, top + len(table) * height), fill=(150, 156, 170), width=2)
    note_y = top + len(table) * height + 30
    draw.text((left, note_y), "注：数据截至2024年9月30日，合计为各月之和。", font=font(SANS, 20), fill=(70, 70, 70))
    draw.text((left, note_y + 34), "Note: figures as of 30 Sep 2024; totals are the sum of the months.",
              font=font(SANS, 18), fill=(110, 110, 110))
    draw.text((800, 760), "审核人签名：", font=font(SANS, 22), fill=(40, 40, 40))
    handwrite(image, (940, 790), "王明", 52, INK, rng)
    draw.text((800, 800), "日期：2024-10-08", font=font(SANS, 20), fill=(60, 60, 60))
    return image


def homework_page() -> Image.Image:
    """The worksheet as the student sees it (portrait): printed problems, handwriting, a red mark."""
    rng = random.Random(2)
    image = Image.new("RGB", (1080, 1350), (250, 246, 232))
    draw = ImageDraw.Draw(image)
    for y in range(160, 1350, 56):
        draw.line((0, y, 1080, y), fill=(188, 206, 230), width=2)
    draw.line((110, 0, 110, 1350), fill=(230, 150, 150), width=2)
    printed, heading = font(SERIF, 30), font(SANS_BOLD, 36)
    draw.text((140, 60), "练习题 3（几何）  班级：初二(1)班", font=heading, fill=(30, 30, 30))
    lines = ["1. 如图，在直角三角形ABC中，∠C=90°，AB=5cm，", "    BC=3cm，点D在AC上，且AD=2cm。",
             "    求线段CD的长度。"]
    for i, line in enumerate(lines):
        draw.text((140, 172 + i * 56), line, font=printed, fill=(25, 25, 25))
    # The figure: right angle at C (bottom left), A on top, B to the right; D on AC.
    c, a, b = (300, 820), (300, 460), (570, 820)
    d = (c[0], a[1] + (c[1] - a[1]) // 2)
    for p, q in ((a, b), (b, c), (c, a)):
        draw.line((p, q), fill=(30, 30, 30), width=3)
    draw.rectangle((c[0], c[1] - 26, c[0] + 26, c[1]), outline=(30, 30, 30), width=2)
    label = font(SERIF, 32)
    for name, (x, y), (dx, dy) in (("A", a, (-40, -20)), ("B", b, (12, -8)), ("C", c, (-40, -6)), ("D", d, (-42, -18))):
        draw.text((x + dx, y + dy), name, font=label, fill=(25, 25, 25))
    draw.ellipse((d[0] - 5, d[1] - 5, d[0] + 5, d[1] + 5), fill=(25, 25, 25))
    handwrite(image, (140, 560), "AD=2cm", 28, INK, rng)
    handwrite(image, (450, 635), "AB=5cm", 28, INK, rng)
    handwrite(image, (380, 880), "BC=3cm", 28, INK, rng)
    for i, line in enumerate(["解：∠C=90°", "AC=√(5²−3²)=4cm", "CD=AC−AD=4−2", "   =2cm", "答：CD的长为2cm。"]):
        handwrite(image, (620, 505 + i * 60), line, 34, INK, rng)
    draw.text((140, 960), "2. 计算：32÷8=", font=printed, fill=(25, 25, 25))
    handwrite(image, (385, 992), "5", 40, INK, rng)
    wobbly_line(draw, (372, 950), (420, 1000), RED, 5, rng)
    wobbly_line(draw, (420, 950), (372, 1000), RED, 5, rng)
    handwrite(image, (470, 1052), "错，重算", 42, RED, rng)
    # Light from the top left: the page darkens smoothly towards the bottom right corner, as on a desk.
    w, h = image.size
    light = Image.radial_gradient("L").resize((2 * w, 2 * h))  # dark centre, bright rim
    light = light.crop((w * 3 // 4, h * 4 // 5, w * 3 // 4 + w, h * 4 // 5 + h)).point(lambda v: 255 - v // 3)
    image = Image.composite(image, Image.new("RGB", image.size, (120, 112, 96)), light)
    return add_noise(image, 2, 6.0).filter(ImageFilter.GaussianBlur(0.6))


def homework_geometry() -> bytes:
    """The phone stored the photo sideways and wrote EXIF orientation 6 ("rotate 90° clockwise to view")."""
    upright = homework_page()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 90° anti-clockwise: what the sensor wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Loupe sample phone"
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=88, exif=exif.tobytes())
    return buffer.getvalue()


def product_router() -> Image.Image:
    """A studio shot of a router box with a model label, port diagram, price tag and two banned claims."""
    image = Image.linear_gradient("L").resize((1920, 1080)).point(lambda v: 235 - v // 6).convert("RGB")
    draw = ImageDraw.Draw(image)
    shadow = Image.new("L", image.size, 0)
    ImageDraw.Draw(shadow).ellipse((470, 900, 1470, 1000), fill=120)
    image.paste((90, 90, 100), (0, 0), shadow.filter(ImageFilter.GaussianBlur(30)))
    front = [(520, 300), (1300, 300), (1300, 940), (520, 940)]
    top = [(520, 300), (640, 200), (1420, 200), (1300, 300)]
    side = [(1300, 300), (1420, 200), (1420, 840), (1300, 940)]
    draw.polygon(front, fill=(24, 38, 66))
    draw.polygon(top, fill=(44, 64, 104))
    draw.polygon(side, fill=(16, 26, 46))
    draw.text((580, 340), "星云 NEBULA", font=font(SANS_BOLD, 64), fill=(255, 255, 255))
    draw.text((580, 430), "双频千兆无线路由器 AX3000", font=font(SANS, 40), fill=(200, 220, 255))
    draw.text((580, 486), "Wi-Fi 6 · 2.4GHz + 5GHz · 10/100/1000Mbps", font=font(SANS, 26), fill=(160, 185, 230))
    # Port diagram: one WAN, four LAN.
    port_font = font(SANS_BOLD, 24)
    for i, name in enumerate(["WAN", "LAN1", "LAN2", "LAN3", "LAN4"]):
        x = 590 + i * 130
        colour = (250, 180, 40) if name == "WAN" else (90, 170, 250)
        draw.rounded_rectangle((x, 600, x + 100, 670), radius=8, fill=(12, 18, 30), outline=colour, width=4)
        draw.text((x + 50, 700), name, font=port_font, fill=colour, anchor="mm")
    # White model sticker.
    draw.rectangle((580, 760, 1060, 900), fill=(245, 245, 245))
    sticker = font(SANS, 24)
    for i, line in enumerate(["型号：NB-AX3000", "输入：12V DC 1A", "WAN×1  LAN×4  生产日期：2024-06"]):
        draw.text((600, 772 + i * 40), line, font=sticker, fill=(30, 30, 30))
    # The misleading claims a moderator must catch.
    draw.regular_polygon((1580, 330, 170), 16, rotation=11, fill=(226, 30, 40))
    draw.text((1580, 300), "全网", font=font(SANS_BOLD, 56), fill=(255, 240, 0), anchor="mm")
    draw.text((1580, 370), "最便宜！", font=font(SANS_BOLD, 56), fill=(255, 240, 0), anchor="mm")
    draw.rounded_rectangle((140, 160, 470, 260), radius=16, fill=(255, 200, 0))
    draw.text((305, 210), "销量第一", font=font(SANS_BOLD, 54), fill=(180, 0, 0), anchor="mm")
    draw.rounded_rectangle((1500, 720, 1800, 880), radius=20, fill=(255, 255, 255), outline=(226, 30, 40), width=6)
    draw.text((1650, 775), "到手价", font=font(SANS, 34), fill=(226, 30, 40), anchor="mm")
    draw.text((1650, 835), "¥199", font=font(SANS_BOLD, 60), fill=(226, 30, 40), anchor="mm")
    return add_noise(image, 3, 4.0).filter(ImageFilter.GaussianBlur(0.8))


def render_all() -> dict[str, bytes]:
    """File name → encoded bytes for every sample (names match core/inputs/samples.py)."""
    png = io.BytesIO()
    document_table().save(png, "PNG", optimize=False)
    jpeg = io.BytesIO()
    product_router().save(jpeg, "JPEG", quality=90)
    return {"document_table.png": png.getvalue(), "homework_geometry.jpg": homework_geometry(),
            "product_router.jpg": jpeg.getvalue()}


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, data in render_all().items():
        (out / name).write_bytes(data)
        print(f"wrote {out / name} ({len(data) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
