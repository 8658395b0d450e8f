"""Reading, converting and writing images and masks in the library's one tensor convention.

Images are float tensors in [0, 1] of shape ``(3, H, W)``; masks are float tensors in {0, 1} of shape
``(1, H, W)``. Grey, RGBA, palette and 16-bit files are converted, never refused. Refused, with the file or
argument named: NaN or infinite pixels, and image files above the pixel budget (`max_image_pixels`: 8192 x 8192
by default, ``ANOGEN_AUG_MAX_IMAGE_PIXELS`` to change it), which would otherwise decode into gigabytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .atomic import write_atomic

logger = logging.getLogger(__name__)

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Default pixel budget of an image or mask file (8192 x 8192: 805 MB as a float32 RGB tensor).
MAX_IMAGE_PIXELS = 8192 * 8192
#: The environment variable that overrides `MAX_IMAGE_PIXELS` (a pixel count; ``0`` lifts the limit).
MAX_IMAGE_PIXELS_ENV = "ANOGEN_AUG_MAX_IMAGE_PIXELS"
#: A mask with more than this fraction of its pixels strictly between 0 and the top value logs a warning.
SOFT_MASK_WARNING = 0.01


def max_image_pixels() -> int | None:
    """The pixel budget of image and mask files: ``$ANOGEN_AUG_MAX_IMAGE_PIXELS`` when set, else
    `MAX_IMAGE_PIXELS`; ``None`` when the variable is ``0`` (no limit). Read at every call."""
    value = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not value:
        return MAX_IMAGE_PIXELS
    try:
        budget = int(value)
    except ValueError:
        budget = -1
    if budget < 0:
        raise ValueError(f"`{MAX_IMAGE_PIXELS_ENV}` must be a pixel count >= 0 (0: no limit), got {value!r}")
    return budget or None


def _culprit(name: str, path: str | os.PathLike | None = None) -> str:
    """How errors name an input: the argument, and the file when there is one (once, if they are the same)."""
    if path is None or str(path) == name:
        return f"`{name}`"
    return f"`{name}` ({path})"


def _open(path: str | os.PathLike, name: str) -> Image.Image:
    path = Path(path)
    culprit = _culprit(name, path)
    if not path.is_file():
        raise FileNotFoundError(f"{culprit}: no such image file: {path}")
    try:
        with warnings.catch_warnings():  # the budget below is the check; PIL's bomb warning would be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            handle = Image.open(path)
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"{culprit}: refused by PIL's pixel limit (PIL.Image.MAX_IMAGE_PIXELS): {error}"
        ) from None
    except Exception as error:  # PIL raises many types for broken files
        raise ValueError(f"{culprit}: cannot read image file {path}: {error}") from error
    with handle:
        width, height = handle.size
        budget = max_image_pixels()
        if budget is not None and width * height > budget:
            raise ValueError(
                f"{culprit}: {width}x{height} is {width * height} pixels, above the pixel budget of {budget} "
                f"({MAX_IMAGE_PIXELS_ENV}; set it higher, or 0 for no limit, if the image is real)"
            )
        try:
            handle.load()
            return handle.copy()
        except Exception as error:
            raise ValueError(f"{culprit}: cannot read image file {path}: {error}") from error


def _check_finite(values: np.ndarray | torch.Tensor, culprit: str) -> None:
    """Refuse NaN and infinity: a NaN would darken (or blank) a whole image when it is rescaled."""
    bad = int((~np.isfinite(values)).sum() if isinstance(values, np.ndarray) else (~values.isfinite()).sum())
    if bad:
        raise ValueError(f"{culprit} holds {bad} NaN or infinite value(s); pixel values must be finite")


def _pil_to_array(picture: Image.Image, culprit: str) -> np.ndarray:
    """Return an ``(H, W, C)`` float32 array in [0, 1], C in {1, 3, 4}; 16-bit and float modes rescaled."""
    if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(picture, dtype=np.float64)
        top = 65535.0 if array.max() > 255 or picture.mode.startswith("I;16") else 255.0
        return (np.clip(array / top, 0, 1)[..., None]).astype(np.float32)
    if picture.mode == "F":
        array = np.asarray(picture, dtype=np.float32)
        _check_finite(array, culprit)
        top = 1.0 if array.max() <= 1.0 else (255.0 if array.max() <= 255 else 65535.0)
        return np.clip(array / top, 0, 1)[..., None]
    if picture.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        picture = picture.convert("RGBA" if "A" in picture.mode or "transparency" in picture.info else "RGB")
    if picture.mode == "LA":
        picture = picture.convert("RGBA")
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return array[..., None] if array.ndim == 2 else array


def load_image(image: ImageLike, *, name: str = "image") -> torch.Tensor:
    """Load an image as a float tensor ``(3, H, W)`` in [0, 1].

    Accepts a path, a PIL image, an ``(H, W[, C])`` numpy array (uint8, uint16 or float) or a tensor
    ``(C, H, W)`` / ``(H, W)``. Grey becomes RGB; alpha is composited onto black; 16-bit is rescaled.

    Raises:
        FileNotFoundError: No such file.
        ValueError: An unreadable file; a file above the pixel budget (`max_image_pixels`); NaN or infinite
            values; a shape that is no image. Each names ``name`` and the file.
    """
    culprit = _culprit(name)
    if isinstance(image, (str, os.PathLike)):
        culprit = _culprit(name, image)
        image = _open(image, name)
    if isinstance(image, Image.Image):
        array = _pil_to_array(image, culprit)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)  # (C, H, W)
    elif isinstance(image, np.ndarray):
        array = image.astype(np.float32)
        _check_finite(array, culprit)
        if image.dtype == np.uint8:
            array = array / 255.0
        elif image.dtype == np.uint16:
            array = array / 65535.0
        array = array[..., None] if array.ndim == 2 else array
        if array.ndim != 3:
            raise ValueError(f"`{name}` as an array must be (H, W) or (H, W, C), got shape {image.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        tensor = image.detach()
        tensor = tensor[None] if tensor.ndim == 2 else tensor
        if tensor.ndim != 3:
            raise ValueError(
                f"`{name}` as a tensor must be (C, H, W) or (H, W), got shape {tuple(image.shape)}"
            )
        if tensor.dtype == torch.uint8:
            tensor = tensor.float() / 255.0
        elif not tensor.is_floating_point():
            tensor = tensor.float() / (65535.0 if tensor.max() > 255 else 255.0)
        tensor = tensor.float()
        _check_finite(tensor, culprit)
    else:
        raise TypeError(
            f"`{name}` must be a path, PIL image, numpy array or tensor, got {type(image).__name__}"
        )
    return _to_rgb(tensor.clamp(0, 1), name)


def _to_rgb(tensor: torch.Tensor, name: str) -> torch.Tensor:
    channels = tensor.shape[0]
    if channels == 1:
        return tensor.expand(3, -1, -1).contiguous()
    if channels == 2:  # grey + alpha
        return (tensor[:1] * tensor[1:]).expand(3, -1, -1).contiguous()
    if channels == 3:
        return tensor.contiguous()
    if channels == 4:  # composite onto black: transparent pixels carry no content
        return (tensor[:3] * tensor[3:]).contiguous()
    raise ValueError(f"`{name}` must have 1, 2, 3 or 4 channels, got {channels}")


def load_mask(mask: ImageLike, *, name: str = "mask") -> torch.Tensor:
    """Load a mask as a float tensor ``(1, H, W)`` in {0, 1} (the channels' maximum, for colour masks).

    A binary mask, one non-zero value whatever it is (0/255, 0/1, 0/65535, bool), keeps every non-zero pixel.
    Any other mask is thresholded at the middle of its value range: foreground is above half the top value
    (``>= 128`` of 255 for 8-bit files, ``> 0.5`` for floats in [0, 1]), so a soft or JPEG-saved mask keeps its
    core, not its halo; when more than `SOFT_MASK_WARNING` of the pixels lie strictly between 0 and the top a
    warning is logged. The top is 1 for PIL images and bool, 255 for uint8, 65535 for uint16, and otherwise the
    first of 1, 255, 65535 at or above the maximum.

    Raises:
        ValueError: NaN, infinite or negative values; a shape that is no mask; the file errors of `load_image`.
    """
    culprit = _culprit(name)
    if isinstance(mask, (str, os.PathLike)):
        culprit = _culprit(name, mask)
        mask = _open(mask, name)
    if isinstance(mask, Image.Image):
        tensor, top = (
            torch.from_numpy(np.ascontiguousarray(_pil_to_array(mask, culprit))).permute(2, 0, 1),
            1.0,
        )
    elif isinstance(mask, (np.ndarray, torch.Tensor)):
        tensor = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask.detach().cpu())
        top = {torch.bool: 1.0, torch.uint8: 255.0, torch.uint16: 65535.0}.get(tensor.dtype)
        tensor = tensor.double()
    else:
        raise TypeError(
            f"`{name}` must be a path, PIL image, numpy array or tensor, got {type(mask).__name__}"
        )
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3:
        raise ValueError(f"`{name}` must be (H, W) or (C, H, W), got shape {tuple(tensor.shape)}")
    _check_finite(tensor, culprit)
    values = tensor[:3].amax(dim=0, keepdim=True)  # (1, H, W)
    if values.numel() and values.min() < 0:
        raise ValueError(f"{culprit} holds negative values (min {values.min().item():.4g}); a mask is >= 0")
    return _binarise(values, top, culprit)


def _binarise(values: torch.Tensor, top: float | None, culprit: str) -> torch.Tensor:
    """{0, 1} float of non-negative ``values`` ``(1, H, W)``: the rule of `load_mask`."""
    foreground = values[values != 0]
    if foreground.numel() == 0 or foreground.min() == foreground.max():  # binary: any non-zero pixel
        return (values != 0).float()
    if top is None:
        top = next((t for t in (1.0, 255.0) if foreground.max() <= t), 65535.0)
    between = float(((values > 0) & (values < top)).double().mean())
    if between > SOFT_MASK_WARNING:
        logger.warning(
            "%s: %.1f%% of the pixels are neither 0 nor %g (a soft or JPEG-saved mask?); thresholded at %g, half "
            "the value range: save masks as binary PNGs to mark pixels exactly",
            culprit,
            100 * between,
            top,
            top / 2,
        )
    return (values > top / 2).float()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Convert a ``(3, H, W)`` image or ``(1, H, W)`` mask in [0, 1] to an 8-bit PIL image."""
    array = (tensor.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if array.shape[0] == 1:
        return Image.fromarray(array[0], mode="L")
    return Image.fromarray(np.transpose(array, (1, 2, 0)), mode="RGB")


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Round an image to the 8-bit grid, so what is returned equals what a PNG of it reads back as."""
    return (image.clamp(0, 1) * 255).round() / 255


def save_png(tensor_or_pil: torch.Tensor | Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (`anogen_aug.atomic.write_atomic`: temp file, fsync, rename)."""
    picture = to_pil(tensor_or_pil) if isinstance(tensor_or_pil, torch.Tensor) else tensor_or_pil
    return write_atomic(path, lambda stream: picture.save(stream, format="PNG"))


def resize_image(images: torch.Tensor, size: tuple[int, int], *, mode: str = "bicubic") -> torch.Tensor:
    """Antialiased (as PIL) resize of ``(B, C, H, W)`` or ``(C, H, W)`` in [0, 1], clamped to [0, 1].

    The one image resize of the library (support images, generation windows, bank sources: ``"bicubic"``; the
    transform's cheap patch transplant: ``"bilinear"``); the same size is returned untouched. Masks resize with
    `anogen_aug.masks.resize_mask`.
    """
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"`mode` must be 'bicubic' or 'bilinear', got {mode!r}")
    size = tuple(int(s) for s in size)
    if images.shape[-2:] == size:
        return images
    batched = images if images.ndim == 4 else images[None]  # (B, C, H, W)
    resized = interpolate_antialiased(batched, size, mode=mode).clamp(0, 1)
    return resized if images.ndim == 4 else resized[0]


def interpolate_antialiased(batched: torch.Tensor, size: tuple[int, int], *, mode: str) -> torch.Tensor:
    """``F.interpolate(..., antialias=True)`` of ``(B, C, H, W)``, correct also for outputs 1 px wide.

    torch's antialiased kernels give every row the first row's value when the output is 1 px wide (seen on CPU,
    torch 2.14): such a resize runs on the transposed tensor instead, which they get right.
    """
    size = tuple(int(s) for s in size)
    flip = size[1] == 1 and size[0] > 1
    batched, size = (batched.transpose(-1, -2), size[::-1]) if flip else (batched, size)  # (B, C, W, H)
    resized = F.interpolate(batched, size=size, mode=mode, antialias=True, align_corners=False)
    return resized.transpose(-1, -2) if flip else resized  # (B, C, H, W)


def content_hash(image: ImageLike) -> str:
    """SHA-256 of a file's bytes, or of an image tensor's 8-bit pixels (first 16 hex digits)."""
    if isinstance(image, (str, os.PathLike)):
        digest = hashlib.sha256(Path(image).read_bytes())
    else:
        pixels = (load_image(image).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        digest = hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode())
    return digest.hexdigest()[:16]


def list_images(folder: str | os.PathLike, *, name: str = "folder") -> list[Path]:
    """Sorted image files of a folder (not recursive); a missing or empty folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"`{name}`: no such folder: {folder}")
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(f"`{name}`: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files
