"""Pixels for a candidate, from wherever the loader left them. URLs are never fetched (offline by design)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmrag_rft.data.schema import Candidate, DataError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def open_image(src: Image.Image | bytes | bytearray | io.BytesIO | str | os.PathLike[str], *, where: str | None = None,
               max_pixels: int | None = None) -> Image.Image:
    """Any image source (a PIL image, encoded bytes, a path) as RGB: the one place pixels are decoded. An image that
    cannot be decoded, or has more than `max_pixels` pixels, is a DataError naming `where` (default: the path)."""
    if isinstance(src, Image.Image):
        return src.convert("RGB")
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    where = where if where is not None else ("image bytes" if isinstance(src, io.BytesIO) else str(src))
    try:
        with Image.open(src) as im:
            if max_pixels is not None and im.size[0] * im.size[1] > max_pixels:
                raise DataError(f"image is {im.size[0]}x{im.size[1]} pixels; at most {max_pixels} allowed",
                                file=where, field="image")
            im.load()
            return im.convert("RGB")
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        why = "not a known image format" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
        raise DataError(f"unreadable image ({why})", file=where, field="image") from None


def find_image_file(image_dir: str | os.PathLike[str], cid: str) -> Path | None:
    """`image_dir/<id>` with any common image extension (or none)."""
    d = Path(image_dir)
    for name in [cid, *(cid + ext for ext in IMAGE_EXTS)]:
        p = d / name
        if p.is_file():
            return p
    return None


def load_image(candidate: Candidate, *, image_dir: str | os.PathLike[str] | None = None) -> Image.Image | None:
    """The candidate's image as RGB, or None when it has no pixels we can reach (caption-only).

    Order: `image_bytes`, then `image_path` (relative paths also tried under `image_dir`), then
    `image_dir/<id>.<ext>`. A file that exists but cannot be decoded is a DataError, not None.
    """
    if candidate.image_bytes is not None:
        return open_image(candidate.image_bytes, where=f"candidate {candidate.id} (image bytes)")
    if candidate.image_path:
        p = Path(candidate.image_path).expanduser()
        tries = [p] if p.is_absolute() else ([Path(image_dir) / p] if image_dir else []) + [p]
        for t in tries:
            if t.is_file():
                return open_image(t)
        if image_dir is None:
            raise DataError(f"image file not found for candidate {candidate.id}", file=str(p), field="image_path")
    if image_dir is not None:
        found = find_image_file(image_dir, candidate.id)
        if found is not None:
            return open_image(found)
        if candidate.image_path:
            raise DataError(f"image file not found for candidate {candidate.id} (also looked in {image_dir})",
                            file=str(candidate.image_path), field="image_path")
    return None


def pixels_or_caption(candidate: Candidate, *, image_dir: str | os.PathLike[str] | None = None) -> Image.Image | None:
    """What a model sees of a candidate: its image for an image candidate whose pixels load, else None (its caption
    stands in). The one image path for inference and training alike; a missing or broken picture is logged, never
    fatal to the question."""
    if candidate.modality != "image":
        return None
    try:
        return load_image(candidate, image_dir=image_dir)
    except DataError as e:
        log.warning("%s: its caption stands in", e)
        return None
