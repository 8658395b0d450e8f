"""Stage 2 of AnoGen: draw a learned defect inside boxes of normal images (box-conditioned DDIM, paper §3.2).

`AnomalyGenerator.generate_batch` is the story, in numbered steps. Beyond the paper (see DESIGN.md): the decoded
box is pasted back onto the original pixels (everything outside the boxes is bit-identical to the input),
a pixel mask is estimated from what the generation changed, large images are generated in a window around
their boxes at the model's resolution, and boxes, images and the guidance pair are batched into few UNet calls.

Where things live: `GenerationConfig` in ``config``; the window geometry (`choose_window`, `crop_window`,
`place_window`, `latent_keep_mask`) in ``window``; `estimate_change_mask` in ``change_mask``; `AnomalyGenerator`
and `spawn_generators` in ``generator``; the sampling math in `anogen_aug.sampling`.

Seeding contract: ``generate(image, boxes, generator=g)`` draws every random number of that image from ``g``.
``generate_batch(images, boxes, generator=[g_0, ..., g_n-1])`` gives image ``i`` exactly the draws that
``generate(images[i], boxes[i], generator=g_i)`` would; a single generator ``g`` is first split into one
generator per image with `spawn_generators` (``n`` seeds drawn from ``g``), so a batch is deterministic given
``g``, and its results equal separate calls with ``spawn_generators(g_copy, n)``. Same generator state, same
bytes, on a given device and dtype. Batched and separate calls draw the same noise, but the UNet sees different
batch sizes, so kernels may round differently: on CPU float32 the results agree to the bit or within one 8-bit
level; on a GPU (TF32 convolutions) a few levels, and more under bf16 autocast.
"""

from .change_mask import MIN_CHANGE, estimate_change_mask
from .config import GenerationConfig
from .generator import AnomalyGenerator, spawn_generators
from .window import Window, choose_window, crop_window, latent_keep_mask, place_window

__all__ = [
    "MIN_CHANGE",
    "AnomalyGenerator",
    "GenerationConfig",
    "Window",
    "choose_window",
    "crop_window",
    "estimate_change_mask",
    "latent_keep_mask",
    "place_window",
    "spawn_generators",
]
