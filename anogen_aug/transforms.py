"""`AnoGenAugment`: a torchvision ``transforms.v2`` transform that puts bank anomalies into training samples.

It READS an anomaly bank (records cached, sample files loaded lazily through a small LRU); it never holds a
diffusion pipeline, so it is cheap and pickles into DataLoader workers. Randomness is drawn once per call in
`make_params` from the global torch RNG (torchvision's convention: each worker is seeded differently) or, for
tests, from a ``generator``.

Two ways to use a sample:

- **direct** (``match_source=True`` and the bank holds a sample generated from this very image, matched by the
  hash of its 8-bit pixels at the stored size): the box region of the sample replaces the input's; outside the
  box the input is untouched.
- **transplant** (otherwise): a random sample's box region is cut out and put at the same *relative* place of the
  input (the box scaled by input size / sample size), blended through its pixel mask. For exact masks
  (crop-and-paste) alpha is the mask itself. For estimated masks (diffusion) the mask is dilated by 1 px and its
  edge softened by a 3x3 mean, so the change fades out; the pixel mask reported is that dilated mask.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .bank import AnomalyBank, BankSample
from .boxes import box_to_slices
from .checks import check_choice, check_probability
from .images import content_hash, resize_image
from .masks import resize_mask

MASK_FROM = ("auto", "mask", "box_mask")
_GREY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 luma, for single-channel inputs


def _transplant(sample: BankSample, height: int, width: int) -> dict[str, torch.Tensor]:
    """Cut each box of ``sample`` and place it at the same relative place on a ``(height, width)`` canvas."""
    h, w = sample.image.shape[-2:]
    scale = torch.tensor([width / w, height / h, width / w, height / h])
    content, alpha = torch.zeros(3, height, width), torch.zeros(1, height, width)
    pixel = torch.zeros(1, height, width, dtype=torch.bool)
    boxes = []
    for box in sample.boxes:
        rows, cols = box_to_slices(box)
        target_rows, target_cols = box_to_slices(box * scale)
        target_rows = slice(max(target_rows.start, 0), min(target_rows.stop, height))
        target_cols = slice(max(target_cols.start, 0), min(target_cols.stop, width))
        size = (target_rows.stop - target_rows.start, target_cols.stop - target_cols.start)
        patch = resize_image(sample.image[:, rows, cols], size, mode="bilinear")  # (3, th, tw)
        hard = resize_mask(sample.mask[:, rows, cols], size, rule="majority_nonempty")  # (1, th, tw) bool
        if sample.mask_exact:
            soft = hard.float()
        else:  # an estimated mask: grow it by 1 px and fade its edge
            hard = F.max_pool2d(hard[None].float(), 3, stride=1, padding=1)[0] > 0
            soft = F.avg_pool2d(hard[None].float(), 3, stride=1, padding=1, count_include_pad=False)[0] * hard
        content[:, target_rows, target_cols] = patch
        alpha[:, target_rows, target_cols] = torch.maximum(alpha[:, target_rows, target_cols], soft)
        pixel[:, target_rows, target_cols] |= hard
        boxes.append([target_cols.start, target_rows.start, target_cols.stop, target_rows.stop])
    box_mask = torch.zeros(1, height, width, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        box_mask[:, y0:y1, x0:x1] = True
    return {"content": content, "alpha": alpha, "pixel_mask": pixel, "box_mask": box_mask, "boxes": boxes}


def _is_image(inpt: Any) -> bool:
    """What torchvision treats as an image here: `tv_tensors.Image`, PIL, or a pure tensor (a tensor that is no
    `tv_tensors.TVTensor`). torchvision hands `make_params` / `transform` at most one pure tensor, the one it
    picked as the image (none when the sample holds an explicit image), so a pure tensor seen here is that one."""
    pure_tensor = isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.TVTensor)
    return isinstance(inpt, (tv_tensors.Image, PIL.Image.Image)) or pure_tensor


def _blend(image: torch.Tensor, content: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``image`` ``(..., C, H, W)`` (C 1 or 3; float in [0, 1] or integer) with ``content`` blended by ``alpha``."""
    content, alpha = content.to(image.device), alpha.to(image.device)
    if image.shape[-3] == 1:
        content = (content * _GREY.to(image.device)[:, None, None]).sum(0, keepdim=True)
    elif image.shape[-3] != 3:
        raise ValueError(
            f"AnoGenAugment: the image must have 1 or 3 channels, got shape {tuple(image.shape)}"
        )
    top = 1.0 if image.is_floating_point() else float(torch.iinfo(image.dtype).max)
    blended = image.float() * (1 - alpha) + content * top * alpha
    blended = blended if image.is_floating_point() else blended.round().clamp(0, top)
    return torch.where(alpha > 0, blended.to(image.dtype), image)


class AnoGenAugment(v2.Transform):
    """Put a generated anomaly from a bank into a sample with probability ``p``.

    Updates, when present in the sample: the first image (plain tensor, `tv_tensors.Image` or PIL image; types in =
    types out; a second image, e.g. a clean source, is left alone), every `tv_tensors.Mask` (logical OR, dtype
    kept, set to 1/True) and every `tv_tensors.BoundingBoxes` (the new boxes appended in its format). Anything
    else passes through. Use it before resizing/normalising (the image in [0, 1] floats or integer pixels).

    Args:
        bank: An `AnomalyBank` or the path of a bank folder.
        p: Probability of adding an anomaly, in [0, 1] (0 is the identity).
        category, defect_type: Use only these records of the bank.
        match_source: Use a sample generated from this very image when the bank has one (see module docs).
        mask_from: What is OR-ed into a `Mask`: ``"mask"`` (the pixel mask), ``"box_mask"`` (the box, the
            paper's weak label) or ``"auto"`` (pixel mask when exact, box otherwise).
        generator: Optional `torch.Generator` (tests); by default the global torch RNG (worker-safe). In a
            DataLoader worker the generator is reseeded once with the worker's seed, so workers do not repeat
            each other's draws. It pickles as its device and state, so "spawn"-started workers work too.
        cache_size: Bank samples kept in memory (per process).

    The parameters of a call (``apply``, ``index``, ``id``, ``mode``, ``mask_exact``, ``mask``, ``pixel_mask``,
    ``box_mask`` ``(H, W)`` bool, ``boxes`` ``(N, 4)`` XYXY) are returned by `forward_with_params`; use them to
    extend a labels tensor that pairs with the boxes (the transform cannot know it).
    """

    def __init__(
        self,
        bank: AnomalyBank | str | os.PathLike,
        *,
        p: float = 0.5,
        category: str | None = None,
        defect_type: str | None = None,
        match_source: bool = True,
        mask_from: str = "auto",
        generator: torch.Generator | None = None,
        cache_size: int = 32,
    ) -> None:
        super().__init__()
        p = check_probability(p, "p")
        check_choice(mask_from, "mask_from", MASK_FROM)
        bank = AnomalyBank.open(bank, category=category, defect_type=defect_type)
        if len(bank) == 0:
            raise ValueError(f"`bank` {bank.root} holds no samples")
        self.bank = bank
        self.p = p
        self.match_source = bool(match_source)
        self.mask_from = mask_from
        self.generator = generator
        self.cache_size = int(cache_size)
        self._sizes = {(r["height"], r["width"]) for r in bank.records}
        self._cache: OrderedDict[int, BankSample] = OrderedDict()
        self._worker: int | None = None  # the DataLoader worker whose seed the generator holds
        self._drawn: list[dict[str, Any]] | None = None  # collects make_params' output in forward_with_params

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # workers reload what they need
        if self.generator is not None:
            # A pickled torch.Generator crashes a worker started with "spawn" (the default on macOS and Windows):
            # travel as its device and state bytes, and be rebuilt by __setstate__.
            state["generator"] = (str(self.generator.device), self.generator.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("generator"), tuple):
            device, data = state["generator"]
            generator = torch.Generator(device=device)
            generator.set_state(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            state = {**state, "generator": generator}
        super().__setstate__(state)

    def extra_repr(self) -> str:
        return f"bank={self.bank!r}, " + super().extra_repr()

    def _sample(self, index: int) -> BankSample:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        sample = self.bank[index]
        self._cache[index] = sample
        while len(self._cache) > max(self.cache_size, 0):
            self._cache.popitem(last=False)
        return sample

    def _rng(self) -> torch.Generator | None:
        """The generator; in a DataLoader worker it is first reseeded with the worker's seed (all workers get a
        copy of one state, which would otherwise repeat the same draws in every worker)."""
        info = torch.utils.data.get_worker_info()
        if self.generator is not None and info is not None and self._worker != info.id:
            self.generator.manual_seed(info.seed)
            self._worker = info.id
        return self.generator

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self._rng()))

    def _choose(self, image, height: int, width: int) -> tuple[int, str]:
        if self.match_source and (height, width) in self._sizes and getattr(image, "ndim", 3) == 3:
            pixels = image.detach().cpu() if isinstance(image, torch.Tensor) else image
            candidates = self.bank.indices_for_source(content_hash(pixels))
            if candidates:
                return candidates[self._randint(len(candidates))], "direct"
        return self._randint(len(self.bank)), "transplant"

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = self._draw(flat_inputs)
        if self._drawn is not None:  # inside `forward_with_params`
            self._drawn.append(params)
        return params

    def _draw(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """This call's randomness: whether to apply, which sample, and how (direct or transplant)."""
        image = next((x for x in flat_inputs if _is_image(x)), None)
        if float(torch.rand(1, generator=self._rng())) >= self.p or image is None:
            return {"apply": False}
        height, width = TF.get_size(image)
        index, mode = self._choose(image, height, width)
        sample = self._sample(index)
        if mode == "direct":
            found = {
                "content": sample.image,
                "alpha": sample.box_mask,
                "pixel_mask": sample.mask > 0,
                "box_mask": sample.box_mask > 0,
                "boxes": sample.boxes.tolist(),
            }
        else:
            found = _transplant(sample, height, width)
        use_pixels = self.mask_from == "mask" or (self.mask_from == "auto" and sample.mask_exact)
        return {
            "apply": True,
            "target": id(image),
            "index": index,
            "id": sample.id,
            "mode": mode,
            "mask_exact": sample.mask_exact,
            "size": (height, width),
            "content": found["content"],
            "alpha": found["alpha"],
            "mask": (found["pixel_mask"] if use_pixels else found["box_mask"])[0],
            "pixel_mask": found["pixel_mask"][0],
            "box_mask": found["box_mask"][0],
            "boxes": torch.tensor(found["boxes"], dtype=torch.float32).reshape(-1, 4),
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"]:
            return inpt
        if isinstance(inpt, tv_tensors.Mask):
            return self._update_mask(inpt, params)
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return self._append_boxes(inpt, params)
        if not _is_image(inpt) or id(inpt) != params["target"]:
            return inpt
        if isinstance(inpt, PIL.Image.Image):
            pixels = TF.pil_to_tensor(inpt.convert("RGB"))  # (3, H, W) uint8
            result = TF.to_pil_image(_blend(pixels, params["content"], params["alpha"]))
            return result if inpt.mode == "RGB" else result.convert(inpt.mode)
        result = _blend(inpt.as_subclass(torch.Tensor), params["content"], params["alpha"])
        return tv_tensors.wrap(result, like=inpt) if isinstance(inpt, tv_tensors.Image) else result

    def _update_mask(self, inpt: tv_tensors.Mask, params: dict[str, Any]) -> tv_tensors.Mask:
        if tuple(inpt.shape[-2:]) != params["size"]:
            raise ValueError(
                f"AnoGenAugment: the Mask is {tuple(inpt.shape[-2:])} but the image is {params['size']} (H, W)"
            )
        plain = inpt.as_subclass(torch.Tensor)
        result = torch.where(params["mask"].to(plain.device), torch.ones((), dtype=plain.dtype), plain)
        return tv_tensors.wrap(result, like=inpt)

    def _append_boxes(
        self, inpt: tv_tensors.BoundingBoxes, params: dict[str, Any]
    ) -> tv_tensors.BoundingBoxes:
        if tuple(inpt.canvas_size) != params["size"]:
            raise ValueError(
                f"AnoGenAugment: the BoundingBoxes canvas is {tuple(inpt.canvas_size)} but the image is "
                f"{params['size']} (H, W)"
            )
        new = TF.convert_bounding_box_format(
            params["boxes"], old_format=tv_tensors.BoundingBoxFormat.XYXY, new_format=inpt.format
        )
        new = new if inpt.is_floating_point() else new.round()
        plain = inpt.as_subclass(torch.Tensor)
        return tv_tensors.wrap(torch.cat([plain, new.to(plain.device, plain.dtype)]), like=inpt)

    def forward_with_params(self, *inputs: Any) -> tuple[Any, dict[str, Any]]:
        """Like calling the transform, but also return the call's parameters (which sample, masks, boxes).

        The call is torchvision's own `forward` (which inputs are transformed is torchvision's rule); the parameters
        are the ones `make_params` drew for it.
        """
        self._drawn = []
        try:
            outputs = self.forward(*inputs)
            return outputs, self._drawn[-1]
        finally:
            self._drawn = None
