"""A few ``diffusers`` models built from tiny configs, for the catalogue's optional group.

Unlike :mod:`catalogue`, the configs are written by hand: three models, which together hold the
building blocks diffusers' pipelines are made of (resnet blocks, down- and up-sampling, self-
and cross-attention, the timestep embedding, the VAE's encoder, posterior and decoder). Sizes
are about the smallest its checks accept: two resolutions of 32 and 64 channels, one layer per
block, group norms of 8 groups, 16 pixels. No weights are downloaded; everything is seeded, so
a build is the same in every process.

``build(name, device)`` gives ``(model in eval mode, forward kwargs)``, like :func:`catalogue.build`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

BATCH = 2
#: Two resolutions, one layer each: every block type runs, at 32 and 64 channels.
SIZES: dict[str, Any] = {"block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 8}

Built = tuple[torch.nn.Module, dict[str, Any]]


def unet_2d() -> Built:
    """The unconditional UNet (DDPM): self-attention at the low resolution, an int timestep."""
    from diffusers import UNet2DModel

    model = UNet2DModel(
        sample_size=16,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        **SIZES,
    )
    # A plain int, as schedulers' loops pass it: the forward makes the timestep tensor itself.
    return model, {"sample": torch.randn(BATCH, 3, 16, 16), "timestep": 10}


def unet_2d_condition() -> Built:
    """Stable Diffusion's UNet: cross-attention on a short sequence of text states."""
    from diffusers import UNet2DConditionModel

    model = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        **SIZES,
    )
    return model, {
        "sample": torch.randn(BATCH, 4, 16, 16),
        "timestep": torch.tensor([1, 500]),
        "encoder_hidden_states": torch.randn(BATCH, 5, 32),
    }


def autoencoder_kl(*, sample_posterior: bool = False) -> Built:
    """Stable Diffusion's VAE: encode, take the posterior's mode (or a sample), decode."""
    from diffusers import AutoencoderKL

    model = AutoencoderKL(
        sample_size=16,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        **SIZES,
    )
    return model, {"sample": torch.randn(BATCH, 3, 16, 16), "sample_posterior": sample_posterior}


MODELS: dict[str, Callable[[], Built]] = {
    "UNet2DModel": unet_2d,
    "UNet2DConditionModel": unet_2d_condition,
    "AutoencoderKL": autoencoder_kl,
    # Draws the latent from torch's global RNG inside forward: the trace must put it back.
    "AutoencoderKL-sampled": lambda: autoencoder_kl(sample_posterior=True),
}


def architectures() -> list[str]:
    """The names :func:`build` takes, in the order the tests list them."""
    return list(MODELS)


def build(name: str, device: str = "cpu") -> Built:
    """``(model in eval mode, forward kwargs)`` for ``name``, seeded, made on ``device``."""
    if name not in MODELS:
        raise KeyError(f"no diffusers model {name!r} here; the names are {', '.join(MODELS)}")
    torch.manual_seed(0)
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")  # diffusers' deprecation notes, which say nothing about the tracer
        model, kwargs = MODELS[name]()
    return model.eval(), kwargs
