"""The prompt templates stage 1 samples from: textual inversion's ``imagenet_templates_small``."""

from __future__ import annotations

_PHOTO_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)
#: The standard textual-inversion prompts (``imagenet_templates_small`` of rinongal/textual_inversion, which the
#: AnoGen code samples from): the 27 photo templates, then the same with a leading "a photo of" read as "an
#: illustration of" and as "a depiction of". 81 entries; the repeats are kept, they weight the draw.
IMAGENET_TEMPLATES_SMALL = tuple(
    template.replace("a photo of", variant, 1) if template.startswith("a photo of") else template
    for variant in ("a photo of", "an illustration of", "a depiction of")
    for template in _PHOTO_TEMPLATES
)
