"""Reading, converting and writing images and masks in the library's one tensor convention.

Images are float tensors in [0, 1] of shape ``(3, H, W)``; masks are float tensors in {0, 1} of shape
``(1, H, W)``. Grey, RGBA, palette and 16-bit files are converted, never refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .atomic import write_atomic

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: str | os.PathLike, name: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`{name}`: no such image file: {path}")
    try:
        with Image.open(path) as handle:
            handle.load()
            return handle.copy()
    except Exception as error:  # PIL raises many types for broken files
        raise ValueError(f"`{name}`: cannot read image file {path}: {error}") from error


def _pil_to_array(picture: Image.Image) -> np.ndarray:
    """Return an ``(H, W, C)`` float32 array in [0, 1], C in {1, 3, 4}; 16-bit and float modes rescaled."""
    if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(picture, dtype=np.float64)
        top = 65535.0 if array.max() > 255 or picture.mode.startswith("I;16") else 255.0
        return (np.clip(array / top, 0, 1)[..., None]).astype(np.float32)
    if picture.mode == "F":
        array = np.asarray(picture, dtype=np.float32)
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
    """
    if isinstance(image, (str, os.PathLike)):
        image = _open(image, name)
    if isinstance(image, Image.Image):
        array = _pil_to_array(image)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)  # (C, H, W)
    elif isinstance(image, np.ndarray):
        array = image.astype(np.float32)
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
    """Load a mask as a float tensor ``(1, H, W)`` in {0, 1}: any non-zero pixel is foreground."""
    if isinstance(mask, (str, os.PathLike)):
        mask = _open(mask, name)
    if isinstance(mask, Image.Image):
        array = _pil_to_array(mask)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    elif isinstance(mask, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(mask.astype(np.float32)))
    elif isinstance(mask, torch.Tensor):
        tensor = mask.detach().float()
    else:
        raise TypeError(
            f"`{name}` must be a path, PIL image, numpy array or tensor, got {type(mask).__name__}"
        )
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3:
        raise ValueError(f"`{name}` must be (H, W) or (C, H, W), got shape {tuple(tensor.shape)}")
    return (tensor[:3].amax(dim=0, keepdim=True) > 0).float()


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
    resized = F.interpolate(batched, size=size, mode=mode, antialias=True, align_corners=False).clamp(0, 1)
    return resized if images.ndim == 4 else resized[0]


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
