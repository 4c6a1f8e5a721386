"""Loading an image: any file, PIL image, array or tensor -> a (3, H, W) uint8 RGB tensor.

Mirrors transformers' `image_utils.load_image` and `convert_to_rgb` (EXIF orientation applied, grey repeated to
three channels, transparency composited over white). qwen-vl-utils' `fetch_image` reads the raw pixel order
(exif_transpose=False). Shapes: H x W pixels, 3 channels, no batch axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = str | Path | Image.Image | np.ndarray | torch.Tensor


def load_image(source: ImageSource, exif_transpose: bool = True) -> torch.Tensor:
    """Any image -> (3, H, W) uint8 RGB tensor.

    `source`: a file path, a PIL image, a numpy array (H, W), (H, W, 1|3|4) uint8, or a tensor (C, H, W) uint8.
    RGB conversion follows transformers' `convert_to_rgb`: grey is repeated to 3 channels; an alpha channel is
    removed by compositing over white (PIL's integer `alpha_composite` for PIL images, the float formula of
    transformers' torchvision backend for arrays), so transparent pixels become white, not black.
    EXIF: for a file path, the orientation tag is applied and then discarded (as transformers' `load_image` does),
    so the pixels are upright and carry no metadata; pass exif_transpose=False to read the raw pixel order
    (what qwen-vl-utils' `fetch_image` does).
    """
    if isinstance(source, (str, Path)):
        return _pil_to_tensor(_open_image(Path(source), exif_transpose))
    if isinstance(source, Image.Image):
        return _pil_to_tensor(source)
    if isinstance(source, np.ndarray):
        return _array_to_tensor(torch.from_numpy(np.ascontiguousarray(source)), channels_last=True, what="array")
    if isinstance(source, torch.Tensor):
        return _array_to_tensor(source, channels_last=False, what="tensor")
    raise TypeError(f"load_image: expected a path, PIL image, numpy array or tensor, got {type(source).__name__}")


def _open_image(path: Path, exif_transpose: bool) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"image file {path} is empty (0 bytes)")
    try:
        image = Image.open(path)
        image.load()  # PIL opens lazily: decode now so a truncated file fails here, with its name
    except UnidentifiedImageError as err:
        raise ValueError(f"{path} is not an image file PIL can read ({err})") from err
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {path}: the file is truncated or corrupt ({err})") from err
    return ImageOps.exif_transpose(image) if exif_transpose else image


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    # parity: transformers' image_transforms.convert_to_rgb (PIL branch)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    array = np.array(image.convert("RGB"))  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


def _array_to_tensor(x: torch.Tensor, channels_last: bool, what: str) -> torch.Tensor:
    if x.dtype != torch.uint8:
        raise ValueError(f"load_image: expected a uint8 {what} (values 0..255), got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]  # (1, H, W) grey
    elif x.ndim == 3 and channels_last:
        x = x.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        layout = "(H, W) or (H, W, C)" if channels_last else "(H, W) or (C, H, W)"
        raise ValueError(f"load_image: a {what} image must be {layout} with C in 1, 3, 4; got shape {tuple(x.shape)}")
    if min(x.shape[1:]) == 0:
        raise ValueError(f"load_image: the {what} image is empty, shape {tuple(x.shape)}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)  # grey -> RGB
    elif x.shape[0] == 4:
        from torchvision.transforms.v2 import functional as tvF

        # parity: transformers' TorchvisionBackend.convert_to_rgb: rgb * alpha + (1 - alpha) in float, back to uint8
        rgba = tvF.to_dtype(x.movedim(0, -1), torch.float32, scale=True)  # (H, W, 4) in [0, 1]
        rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        x = tvF.to_dtype(rgb, torch.uint8, scale=True).movedim(-1, 0)
    return x.contiguous()
