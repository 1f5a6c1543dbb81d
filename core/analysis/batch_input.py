"""What a batch runs on: the images among uploaded files and zips, read safely, with every other file listed.

Nothing is ever extracted to disk: zip members are read into memory (within the limits below) and a
member's name is only ever displayed, never used as a path, so no name can write anywhere. Still, an
archive whose names try to leave their folder (`../x.png`, `/etc/x.png`, `C:\\x.png`) is refused whole:
it was made to attack an unzipper, and nothing in it is trusted.

Decisions (a refusal is a BatchError that says what to change; a file that is merely not an image is
listed as skipped, with why):
- limits: `batch_max_files` images, `batch_max_mb` of uploads, 5 times that unpacked, 10,000 names in a zip;
- zip bombs: the central directory is checked before any member is read: the number of members named as
  images against `batch_max_files`, the declared unpacked size against the limit, the declared compression
  ratio of each member and of the archive as a whole under 100 (above 1 MiB); members are then read one at a
  time, and reading stops at the declared size + 1 byte, so an archive that lies about its sizes cannot make
  Loupe read more than it declared;
- images are recognised by their header (JPEG, PNG, WebP, BMP, GIF, TIFF, as the question path accepts),
  after a name check; nested folders are walked, a zip inside a zip is not opened, encrypted members,
  symbolic links and macOS metadata (`__MACOSX/`, `._*`) are skipped.
"""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from core.analysis import batch_messages as said
from core.errors import BatchError, ConfigError
from core.inputs.images import ACCEPTED_FORMATS
from core.serving.recorded_ask import ImageUpload
from core.settings import Settings

MB = 1024 * 1024
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class BatchLimits:
    """How much one batch may take: images, uploaded bytes, unpacked bytes, compression ratio, zip names."""

    max_files: int = 200
    max_upload_bytes: int = 200 * MB
    max_unpacked_bytes: int = 1000 * MB
    max_ratio: float = 100.0
    ratio_floor_bytes: int = MB  # small members may compress well legitimately (a blank PNG inside a zip)
    max_entries: int = 10_000

    def __post_init__(self) -> None:
        if min(self.max_files, self.max_upload_bytes, self.max_unpacked_bytes, self.max_entries) < 1:
            raise ConfigError("Batch limits must be positive (batch_max_files, batch_max_mb).")

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchLimits:
        return cls(max_files=settings.batch_max_files, max_upload_bytes=settings.batch_max_mb * MB,
                   max_unpacked_bytes=5 * settings.batch_max_mb * MB)


@dataclass(frozen=True)
class BatchImage:
    """One image of a batch: its display name (zip members keep their folders), bytes and SHA-256."""

    name: str
    data: bytes
    sha256: str


@dataclass(frozen=True)
class SkippedFile:
    """A file that will not be run, and why (shown to the analyst)."""

    name: str
    reason: str


@dataclass(frozen=True)
class BatchInput:
    """The images found in the uploads, in upload then archive order, and the files skipped."""

    images: tuple[BatchImage, ...]
    skipped: tuple[SkippedFile, ...] = field(default_factory=tuple)


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


def _image_format(data: bytes) -> str | None:
    """The format named in the header if it is one Loupe reads; the pixels are not decoded here."""
    try:
        with Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS)) as image:
            return image.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _unsafe(name: str) -> bool:
    path = name.replace("\\", "/")
    return path.startswith("/") or bool(_DRIVE.match(path)) or "\x00" in path or ".." in path.split("/")


def _skip_reason(info: zipfile.ZipInfo) -> str:
    name = info.filename.replace("\\", "/")
    base = name.rsplit("/", 1)[-1]
    if name.startswith("__MACOSX/") or base.startswith("._") or base == ".DS_Store":
        return "macOS metadata"
    if info.flag_bits & 0x1:
        return "encrypted (password-protected zips are not opened)"
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return "a symbolic link"
    if base.lower().endswith(".zip"):
        return "a zip inside the zip (not opened)"
    if not base.lower().endswith(IMAGE_SUFFIXES):
        return "not an image"
    return ""


def _open_zip(upload: ImageUpload) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(upload.data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise BatchError(said.NOT_A_ZIP(name=upload.name)) from None


def _check_archive(upload: ImageUpload, infos: list[zipfile.ZipInfo], limits: BatchLimits, unpacked: int,
                   images: int) -> None:
    """Refuse the whole archive before reading any member: too many names or images, unsafe names, a bomb.

    Everything here comes from the central directory, so a refusal costs the archive's size, never its
    unpacked size (999 one-megabyte members in a 1 MB zip were once all read before the image cap refused them).
    """
    if len(infos) > limits.max_entries:
        raise BatchError(said.TOO_MANY_NAMES(name=upload.name, count=len(infos), limit=limits.max_entries))
    # Counted by name, the way members are chosen for reading: each one named as an image would be read and
    # could be kept, so more than the limit is refused up front rather than found out after reading them.
    named = sum(1 for i in infos if not i.is_dir() and not _skip_reason(i))
    if images + named > limits.max_files:
        raise BatchError(said.ZIP_TOO_MANY_WITH_EARLIER(name=upload.name, count=named, earlier=images,
                                                        limit=limits.max_files) if images else
                         said.ZIP_TOO_MANY_IMAGES(name=upload.name, count=named, limit=limits.max_files))
    for info in infos:
        if _unsafe(info.filename):
            raise BatchError(said.UNSAFE_NAME(name=upload.name, member=info.filename))
    declared = unpacked + sum(i.file_size for i in infos if not i.is_dir())
    if declared > limits.max_unpacked_bytes:
        raise BatchError(said.WOULD_UNPACK(name=upload.name, size=_mb(declared), limit=_mb(limits.max_unpacked_bytes)))
    # The archive as a whole, so that many members each under the per-member floor cannot add up to a bomb.
    members = declared - unpacked
    packed = sum(i.compress_size for i in infos if not i.is_dir())
    if members > limits.ratio_floor_bytes and members > limits.max_ratio * max(packed, 1):
        raise BatchError(said.RATIO(name=upload.name, size=_mb(members), packed=_mb(packed), ratio=limits.max_ratio))
    for info in infos:
        if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise BatchError(said.MEMBER_RATIO(name=upload.name, member=info.filename, size=_mb(info.file_size),
                                               packed=info.compress_size, ratio=limits.max_ratio))


def _read_zip(upload: ImageUpload, limits: BatchLimits, unpacked: int,
              images: list[BatchImage], skipped: list[SkippedFile]) -> int:
    """Add the zip's images and skipped files; returns the unpacked byte count so far."""
    with _open_zip(upload) as archive:
        infos = archive.infolist()
        _check_archive(upload, infos, limits, unpacked, len(images))
        for info in infos:
            name = f"{upload.name}/{info.filename}"
            if info.is_dir():
                continue
            reason = _skip_reason(info)
            if reason:
                skipped.append(SkippedFile(name, reason))
                continue
            try:
                with archive.open(info) as member:
                    data = member.read(info.file_size + 1)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError, zlib.error) as exc:
                skipped.append(SkippedFile(name, f"cannot be read from the zip ({exc})"))
                continue
            if len(data) > info.file_size:
                raise BatchError(said.MEMBER_OVERFLOW(name=upload.name, member=info.filename))
            unpacked += len(data)
            if unpacked > limits.max_unpacked_bytes:  # cannot happen with honest sizes; kept as the last guard
                raise BatchError(said.UNPACKS_MORE(name=upload.name, limit=_mb(limits.max_unpacked_bytes)))
            _add(name, data, images, skipped)
            if len(images) > limits.max_files:  # cannot happen after the count above; stops reading if it did
                raise BatchError(said.ZIP_OVER_FILES(name=upload.name, limit=limits.max_files))
    return unpacked


def _add(name: str, data: bytes, images: list[BatchImage], skipped: list[SkippedFile]) -> None:
    if _image_format(data) is None:
        skipped.append(SkippedFile(name, "not an image Loupe can read (JPEG, PNG, WebP, BMP, GIF, TIFF)"))
    else:
        images.append(BatchImage(name, data, hashlib.sha256(data).hexdigest()))


def collect(uploads: Sequence[ImageUpload], limits: BatchLimits | None = None) -> BatchInput:
    """The images in `uploads` (images and .zip files; zips are walked, folders and all), or a BatchError."""
    limits = limits or BatchLimits()
    if not uploads:
        raise BatchError(said.NO_UPLOADS())
    total = sum(len(u.data) for u in uploads)
    if total > limits.max_upload_bytes:
        raise BatchError(said.UPLOADS_TOO_BIG(size=_mb(total), limit=_mb(limits.max_upload_bytes)))
    images: list[BatchImage] = []
    skipped: list[SkippedFile] = []
    unpacked = 0
    for upload in uploads:
        if upload.name.lower().endswith(".zip"):
            unpacked = _read_zip(upload, limits, unpacked, images, skipped)
        else:
            _add(upload.name, upload.data, images, skipped)
        if len(images) > limits.max_files:
            raise BatchError(said.UPLOADS_OVER_FILES(limit=limits.max_files))
    if not images:
        listed = ", ".join(f"{s.name} ({s.reason})" for s in skipped[:5]) or "nothing"
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise BatchError(said.NO_IMAGES(listed=listed + more))  # the files and their reasons, as listed
    return BatchInput(tuple(images), tuple(skipped))
