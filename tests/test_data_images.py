"""load_image: bytes, paths, image_dir lookup, and clear errors; never a URL fetch."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from mmrag_rft.data import Candidate, DataError
from mmrag_rft.data.images import load_image


def _png_bytes(mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (2, 2), (10, 20, 30, 255) if mode == "RGBA" else 128).save(buf, "PNG")
    return buf.getvalue()


def test_bytes_to_rgb() -> None:
    im = load_image(Candidate(id="a", modality="image", image_bytes=_png_bytes()))
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (10, 20, 30)
    grey = load_image(Candidate(id="g", modality="image", image_bytes=_png_bytes("L")))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (128, 128, 128)


def test_paths_and_image_dir(tmp_path: Path) -> None:
    Image.new("RGB", (2, 2), (1, 2, 3)).save(tmp_path / "x1.jpg")
    Image.new("RGB", (2, 2), (0, 0, 255)).save(tmp_path / "rel.png")
    assert load_image(Candidate(id="z", modality="image", image_path=str(tmp_path / "rel.png"))).getpixel((0, 0)) \
        == (0, 0, 255)
    assert load_image(Candidate(id="z", modality="image", image_path="rel.png"), image_dir=tmp_path) is not None
    assert load_image(Candidate(id="x1", modality="image"), image_dir=tmp_path).size == (2, 2)
    assert load_image(Candidate(id="x2", modality="image"), image_dir=tmp_path) is None
    url_only = Candidate(id="u", modality="image", image_url="https://example.org/a.jpg")
    assert load_image(url_only) is None


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unreadable image"):
        load_image(Candidate(id="b", modality="image", image_bytes=b"not an image"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DataError) as ei:
        load_image(Candidate(id="b", modality="image", image_path=str(broken)))
    assert ei.value.file == str(broken) and ei.value.field == "image"
    with pytest.raises(DataError, match="image file not found for candidate m"):
        load_image(Candidate(id="m", modality="image", image_path=str(tmp_path / "missing.png")))


def test_training_and_inference_see_the_same_pixels_or_the_caption(tmp_path, caplog):
    from mmrag_rft.data.images import pixels_or_caption
    from mmrag_rft.training import examples

    good = Candidate(id="a", modality="image", image_bytes=_png_bytes())
    assert examples.pixels_or_caption is pixels_or_caption  # one loader: training uses the pipeline's
    assert pixels_or_caption(good).size == load_image(good).size
    (tmp_path / "broken.png").write_bytes(b"not a png")
    broken = Candidate(id="b", modality="image", image_path=str(tmp_path / "broken.png"))
    assert pixels_or_caption(broken) is None and "caption stands in" in caplog.text
    assert pixels_or_caption(Candidate(id="t", modality="text", text="x")) is None


def test_open_image_is_the_one_decoder(tmp_path: Path) -> None:
    """Every source kind decodes alike; an oversized or undecodable one names where it came from."""
    from mmrag_rft.data.images import open_image

    raw = _png_bytes()
    (tmp_path / "a.png").write_bytes(raw)
    decoded = [open_image(raw), open_image(io.BytesIO(raw)), open_image(tmp_path / "a.png"),
               open_image(str(tmp_path / "a.png")), open_image(Image.open(io.BytesIO(raw)))]
    assert {(im.mode, im.getpixel((0, 0))) for im in decoded} == {("RGB", (10, 20, 30))}
    with pytest.raises(DataError, match="2x2 pixels; at most 3 allowed") as ei:
        open_image(raw, where="query image", max_pixels=3)
    assert ei.value.file == "query image"
    with pytest.raises(DataError, match="not a known image format") as ei:
        open_image(b"<html>", where="upload")
    assert str(ei.value).startswith("upload")
