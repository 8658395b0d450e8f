"""`GenerationConfig`: the settings of box-conditioned generation, validated at construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..checks import check_bool, check_choice, check_int, check_number, check_str


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """Settings of box-conditioned generation; defaults are the AnoGen authors' (DDIM 50, eta 0, scale 10).

    Attributes:
        num_inference_steps: DDIM steps.
        eta: DDIM eta (0 = deterministic given the initial noise and the blend noise).
        guidance_scale: Classifier-free guidance ``e = e_u + s (e_c - e_u)``; 1 skips the unconditional pass.
        paste_back: Keep every pixel outside the boxes bit-identical to the input; ``False`` is the authors'
            behaviour (the whole decoded window replaces the input there).
        negative_prompt: The unconditional prompt (the authors' ``""``).
        prompt: ``None`` for the placeholder token(s) alone (the authors' ``"*"``), or a template with ``{}``
            where the token goes, e.g. ``"a photo of a {}"``.
        local: For images larger than the model's resolution, generate in a window around the boxes (side
            ``max(resolution, context * box extent)``) instead of resizing the whole image.
        context: Window side as a multiple of the boxes' extent in local mode (>= 1).
        mask_threshold: Fixed threshold on the smoothed mean absolute change for the pixel mask; ``None`` for
            Otsu's threshold inside each box.
        max_batch_size: Most rows per UNet call (an image with guidance takes two).
        mixed_precision: ``"no"`` or ``"bf16"`` (the UNet calls and the VAE encoder and decoder under
            ``torch.autocast`` with bfloat16; text states, the sampling math and the latents stay float32).
    """

    num_inference_steps: int = 50
    eta: float = 0.0
    guidance_scale: float = 10.0
    paste_back: bool = True
    negative_prompt: str = ""
    prompt: str | None = None
    local: bool = True
    context: float = 2.0
    mask_threshold: float | None = None
    max_batch_size: int = 8
    mixed_precision: str = "no"

    def __post_init__(self) -> None:
        # Values are checked, not converted: the config is recorded as given (bank manifests hold it).
        check_int(self.num_inference_steps, "num_inference_steps")
        check_int(self.max_batch_size, "max_batch_size")
        check_number(self.eta, "eta", low=0)
        check_number(self.guidance_scale, "guidance_scale", low=0)
        check_number(self.context, "context", low=1)
        if self.mask_threshold is not None:
            check_number(self.mask_threshold, "mask_threshold", low=0, high=1, low_open=True, high_open=True)
        check_bool(self.paste_back, "paste_back")
        check_bool(self.local, "local")
        check_str(self.negative_prompt, "negative_prompt", empty=True)
        if self.prompt is not None and (not isinstance(self.prompt, str) or "{}" not in self.prompt):
            raise ValueError(f"`prompt` must be None or a template containing '{{}}', got {self.prompt!r}")
        check_choice(self.mixed_precision, "mixed_precision", ("no", "bf16"))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (``GenerationConfig(**config.to_dict()) == config``)."""
        return dataclasses.asdict(self)
