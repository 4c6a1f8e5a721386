"""qwenlite.image_io: every kind of image source gives the same upright RGB pixels as transformers' load_image.

Hostile inputs live here too: unreadable files, URLs, wide PIL modes (16-bit, float), EXIF on opened images,
NaN/inf and wrong dtypes in arrays. Each refusal names the input and the rule.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qwenlite import Processor
from qwenlite.image_io import load_image
from qwenlite.preprocessing import preprocess_image


@pytest.fixture(scope="module")
def processor(ckpt) -> Processor:
    return Processor.from_pretrained(ckpt)


def _naming(name: str, rule: str) -> str:
    """A regex for a message that names the file and states the rule, in either order."""
    return rf"{re.escape(name)}.*{rule}|{rule}.*{re.escape(name)}"


def test_path_pil_and_array_give_the_same_pixels(photo_path):
    from_path = preprocess_image(photo_path)
    from_pil = preprocess_image(Image.open(photo_path))
    from_array = preprocess_image(np.array(Image.open(photo_path)))
    assert torch.equal(from_path.pixel_values, from_pil.pixel_values)
    assert torch.equal(from_path.pixel_values, from_array.pixel_values)


def test_exif_orientation_is_applied_like_transformers_load_image(tmp_path):
    from transformers.image_utils import load_image as hf_load_image

    raw = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    Image.fromarray(raw).save(path, exif=exif)
    upright = load_image(path)
    assert upright.shape == (3, 50, 30)
    assert torch.equal(upright, torch.from_numpy(np.array(hf_load_image(str(path)))).permute(2, 0, 1))
    assert torch.equal(load_image(path, exif_transpose=False), torch.from_numpy(raw).permute(2, 0, 1))


@pytest.mark.parametrize("orientation, shape", [(3, (3, 30, 50)), (6, (3, 50, 30)), (8, (3, 50, 30))])
def test_exif_orientation_is_applied_to_an_opened_pil_jpeg(orientation, shape, tmp_path):
    """An opened PIL image is turned upright as its path is (transformers' load_image does both)."""
    from transformers.image_utils import load_image as hf_load_image

    raw = np.random.default_rng(2).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(raw).save(path, exif=exif, quality=95)
    opened = Image.open(path)
    upright = load_image(opened)
    assert upright.shape == shape and opened.size == (50, 30)  # the caller's image is not modified
    assert torch.equal(upright, load_image(path))
    assert torch.equal(upright, torch.from_numpy(np.array(hf_load_image(Image.open(path)))).permute(2, 0, 1))
    assert load_image(Image.open(path), exif_transpose=False).shape == (3, 30, 50)  # the raw pixel order


# ---------------------------------------------------------------- unreadable files and URLs


@pytest.mark.parametrize(
    "name, make, error, message",
    [
        ("text.jpg", lambda p, photo: p.write_text("this is text, not a JPEG"), ValueError, "is not an image file"),
        ("empty.jpg", lambda p, photo: p.write_bytes(b""), ValueError, r"is empty \(0 bytes\)"),
        ("cut.jpg", lambda p, photo: p.write_bytes(photo.read_bytes()[:5000]), ValueError, "truncated or corrupt"),
        ("video.jpg", lambda p, photo: shutil.copy(photo.parent / "sample_video.mp4", p), ValueError, "not an image"),
        ("missing.jpg", lambda p, photo: None, FileNotFoundError, "image file not found"),
    ],
    ids=["text-as-jpg", "zero-bytes", "truncated-jpg", "mp4-as-jpg", "missing"],
)
def test_unreadable_image_files_are_named(name, make, error, message, tmp_path, photo_path, processor):
    path = tmp_path / name
    make(path, photo_path)
    with pytest.raises(error, match=_naming(name, message)):
        load_image(path)
    with pytest.raises(error, match=re.escape(name)):  # through the processor too
        processor(text="<|image_pad|>", images=[str(path)])


def test_png_cut_in_half_is_named(tmp_path, photo_path):
    Image.open(photo_path).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot decode image .*half\.png: the file is truncated or corrupt"):
        preprocess_image(tmp_path / "half.png")


URLS = [
    "https://example.com/cat.jpg",
    "http://example.com/cat.png",
    "HTTPS://EXAMPLE.COM/CAT.JPG",
    "ftp://example.com/cat.jpg",
    "data:image/png;base64,iVBORw0KGgo=",
    Path("https://example.com/cat.jpg"),  # a Path has already folded // into /
]


@pytest.mark.parametrize("url", URLS, ids=[f"{type(u).__name__}:{str(u)[:12]}" for u in URLS])
def test_urls_are_refused_up_front(url, processor):
    with pytest.raises(ValueError, match=r"is a URL: qwenlite never downloads; save the file first"):
        load_image(url)
    with pytest.raises(ValueError, match=re.escape(str(url)[:20]) + ".*is a URL"):  # through the processor too
        processor.from_messages([{"role": "user", "content": [{"type": "image", "image": url}]}])


def test_a_file_url_reads_the_local_file(photo_path):
    assert torch.equal(load_image(f"file://{photo_path}"), load_image(photo_path))


# ---------------------------------------------------------------- wide PIL modes: converted by their range


def _sixteen_bit() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 65536, (40, 60), dtype=np.uint16)  # (H, W), the full 16-bit range


@pytest.mark.parametrize("kind", ["png file", "I;16", "I;16B", "I"])
def test_16_bit_images_are_scaled_not_clipped(kind, tmp_path):
    values = _sixteen_bit()
    if kind == "png file":
        Image.fromarray(values).save(tmp_path / "deep.png")
        source = tmp_path / "deep.png"
    elif kind == "I;16B":
        source = Image.fromarray(values.astype(">u2"))
    elif kind == "I":
        source = Image.fromarray(values.astype(np.int32))
    else:
        source = Image.fromarray(values)
    if isinstance(source, Image.Image):
        assert source.mode == kind
    rgb = load_image(source)
    expected = torch.from_numpy(np.round(values / 257).astype(np.uint8))  # 65535 -> 255, 32768 -> 128
    assert rgb.shape == (3, 40, 60) and torch.equal(rgb[0], expected) and torch.equal(rgb[2], expected)
    assert (rgb == 255).float().mean() < 0.01  # PIL's own convert("RGB") clips ~99% of these to 255


@pytest.mark.parametrize("values", [[-1, 5], [0, 70000]], ids=["negative", "above-65535"])
def test_mode_i_outside_16_bits_is_refused(values):
    image = Image.fromarray(np.array([values, values], np.int32))
    with pytest.raises(ValueError, match=rf"mode 'I' holds values {values[0]}..{values[1]}; qwenlite reads integer"):
        load_image(image)


def test_float_image_in_0_1_is_scaled_by_255():
    values = np.random.default_rng(4).random((30, 40)).astype(np.float32)
    rgb = load_image(Image.fromarray(values, "F"))
    assert torch.equal(rgb[1], torch.from_numpy(np.round(values.astype(np.float64) * 255).astype(np.uint8)))
    assert rgb.float().mean() > 100  # not black


@pytest.mark.parametrize(
    "fill, found",
    [(2.0, r"values 0..2"), (-0.5, r"values -0.5..0"), (np.nan, "NaN or infinite"), (np.inf, "NaN or infinite")],
    ids=["above-1", "negative", "nan", "inf"],
)
def test_float_image_outside_0_1_is_refused(fill, found):
    values = np.zeros((8, 8), np.float32)
    values[0, 0] = fill
    with pytest.raises(ValueError, match=rf"mode 'F'\) image must hold finite values in \[0, 1\].*found {found}"):
        load_image(Image.fromarray(values, "F"))


# ---------------------------------------------------------------- arrays and tensors


@pytest.mark.parametrize(
    "source, error, message",
    [
        (
            np.zeros((20, 20, 3), np.float32),
            ValueError,
            r"expected a uint8 array \(values 0..255\), got dtype torch.float32",
        ),
        (torch.zeros(3, 20, 20), ValueError, r"expected a uint8 tensor .* got dtype torch.float32"),
        (np.full((20, 20, 3), np.nan, np.float32), ValueError, r"expected a uint8 array .* got dtype torch.float32"),
        (torch.full((3, 20, 20), float("inf")), ValueError, r"expected a uint8 tensor .* got dtype torch.float32"),
        (np.zeros((20, 20, 3), np.uint16), ValueError, r"expected a uint8 array .* got dtype torch.uint16"),
        (np.zeros((20, 20, 2), np.uint8), ValueError, r"\(H, W\) or \(H, W, C\) with C in 1, 3, 4; got shape"),
        (np.zeros((0, 20, 3), np.uint8), ValueError, r"the array image is empty, shape \(3, 0, 20\)"),
        (42, TypeError, "load_image: expected a path, PIL image, numpy array or tensor, got int"),
    ],
    ids=["float-array", "float-tensor", "nan-array", "inf-tensor", "uint16-array", "two-channels", "empty", "int"],
)
def test_bad_image_arrays(source, error, message):
    with pytest.raises(error, match=message):
        load_image(source)
