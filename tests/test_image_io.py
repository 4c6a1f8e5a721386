"""qwenlite.image_io: every kind of image source gives the same upright RGB pixels as transformers' load_image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from qwenlite.image_io import load_image
from qwenlite.preprocessing import preprocess_image


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


@pytest.mark.parametrize("kind", ["truncated", "not an image", "missing"])
def test_unreadable_image_files_raise_naming_the_file(kind, tmp_path, photo_path):
    path = tmp_path / "bad.jpg"
    if kind == "truncated":
        path.write_bytes(photo_path.read_bytes()[:5000])
    elif kind == "not an image":
        path.write_text("this is text, not a JPEG")
    error = FileNotFoundError if kind == "missing" else ValueError
    with pytest.raises(error, match="bad.jpg"):
        preprocess_image(path)


def test_bad_arrays_raise_naming_the_rule():
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        load_image(np.zeros((20, 20, 2), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        load_image(np.zeros((0, 20, 3), np.uint8))
    with pytest.raises(TypeError, match="load_image"):
        load_image(42)
