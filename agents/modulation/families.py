"""Where a modulation goes: the pipeline families it supports and their denoisers' widths."""

from __future__ import annotations

from typing import Any

import torch

from configs.errors import MoraError

FAMILIES = ("sd3", "wan", "svd")



def family_of(pipe: Any) -> str:
    """``sd3`` / ``wan`` / ``svd`` from the pipeline class; anything else is a MoraError."""
    name = type(pipe).__name__
    if name.startswith("StableDiffusion3"):
        return "sd3"
    if name.startswith("Wan"):
        return "wan"
    if name.startswith("StableVideoDiffusion"):
        return "svd"
    raise MoraError(f"self-modulated fine-tuning supports SD3, Wan and SVD pipelines, not {name}")


def denoiser_of(pipe: Any) -> torch.nn.Module:
    """The module the modulation feeds: the SD3/Wan transformer or the SVD UNet."""
    family = family_of(pipe)
    module = pipe.unet if family == "svd" else pipe.transformer
    if module is None:
        raise MoraError(f"{type(pipe).__name__} has no denoiser loaded")
    return module


def layout_of(family: str) -> str:
    return "fill" if family == "wan" else "append"


def conditioning_width(pipe: Any) -> int:
    """``D``: the width of the ``encoder_hidden_states`` the denoiser takes."""
    family = family_of(pipe)
    cfg = denoiser_of(pipe).config
    if family == "sd3":
        return int(cfg.joint_attention_dim)
    if family == "wan":
        return int(cfg.text_dim)
    return int(cfg.cross_attention_dim)


def device_of(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
