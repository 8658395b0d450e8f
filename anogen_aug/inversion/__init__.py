"""Stage 1 of AnoGen: learn a defect embedding from 1-3 real defects by mask-guided textual inversion.

The latent diffusion model stays frozen; one new token vector ``v`` (or a few) is the only thing trained, with
the masked denoising objective of AnoGen (Gui, Gao et al., ECCV 2024, arXiv 2505.09263, stage 1):

    v* = argmin_v  E_{z = E(I_a), eps, t} || (eps - eps_theta(z_t, t, c(prompt with v))) * M_a ||^2

where ``M_a`` is the defect mask at latent resolution. The mask keeps ``v`` from learning "bottle" instead of
"broken". `InversionConfig`'s defaults are the settings of the authors' released code.

Where things live: `learn` (the story, `learn_defect_embedding`), `config` (`InversionConfig`), `templates`
(`IMAGENET_TEMPLATES_SMALL`), `step` (one optimisation step as public parts: `encode_support`, `init_vectors`,
`template_ids`, `train_step`, `masked_mse`), `checkpoints` (resumable checkpoints).
"""

from __future__ import annotations

from .checkpoints import RESUMABLE_CHANGES, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import InversionConfig
from .learn import learn_defect_embedding
from .step import SupportLatents, encode_support, init_vectors, masked_mse, template_ids, train_step
from .templates import IMAGENET_TEMPLATES_SMALL

__all__ = [
    "IMAGENET_TEMPLATES_SMALL",
    "RESUMABLE_CHANGES",
    "InversionConfig",
    "SupportLatents",
    "encode_support",
    "init_vectors",
    "latest_checkpoint",
    "learn_defect_embedding",
    "load_checkpoint",
    "masked_mse",
    "save_checkpoint",
    "template_ids",
    "train_step",
]
