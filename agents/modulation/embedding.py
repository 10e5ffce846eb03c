"""The modulation embedding: a learnable K×D parameter joined to the denoiser's conditioning."""

from __future__ import annotations

from typing import Any

import torch

from agents.modulation.families import conditioning_width, denoiser_of, device_of, family_of, layout_of
from agents.modulation.initialisation import special_token_states, typical_norm
from configs.errors import MoraError

MODES = ("special_token", "random", "off")



class ModulationEmbedding(torch.nn.Module):
    """A ``K×D`` learnable embedding joined to the denoiser's ``encoder_hidden_states``.

    ``layout`` is ``append`` (concatenate after the sequence: SD3, SVD) or ``fill`` (concatenate
    after each row's last non-zero token inside the zero padding, keeping the length: Wan).
    """

    def __init__(self, init: torch.Tensor, layout: str = "append", mode: str = "special_token"):
        super().__init__()
        if init.ndim != 2 or init.shape[0] < 1:
            raise MoraError(f"a modulation embedding is K×D, got shape {tuple(init.shape)}")
        if layout not in ("append", "fill"):
            raise MoraError(f"unknown modulation layout {layout!r}")
        self.weight = torch.nn.Parameter(init.detach().clone().float())
        self.layout = layout
        self.mode = mode

    @property
    def tokens(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    @property
    def factor(self) -> float:
        """The modulation factor: the L2 norm of the embedding."""
        return float(self.weight.detach().float().norm())

    def append(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """Join the modulation to ``[B, L, D]`` conditioning (batch-broadcast); differentiable."""
        ehs = encoder_hidden_states
        if ehs.ndim != 3 or ehs.shape[-1] != self.dim:
            raise MoraError(f"modulation of width {self.dim} cannot join conditioning of shape "
                            f"{tuple(ehs.shape)}")
        mod = self.weight.to(device=ehs.device, dtype=ehs.dtype)
        batch, length, dim = ehs.shape
        mod = mod.unsqueeze(0).expand(batch, -1, -1)
        if self.layout == "append":
            return torch.cat([ehs, mod], dim=1)
        # fill: after the last real (non-zero) row, inside the zero padding.
        k = self.tokens
        if length < k:
            raise MoraError(f"conditioning of {length} tokens has no room for {k} modulation tokens")
        real = ehs.detach().abs().sum(-1) != 0  # [B, L]
        positions = torch.arange(1, length + 1, device=ehs.device).expand(batch, -1)
        ends = (positions * real).amax(dim=1)  # index after the last real row (0: none)
        starts = torch.clamp(ends, max=length - k)
        index = (starts[:, None] + torch.arange(k, device=ehs.device)[None, :])[..., None].expand(-1, -1, dim)
        return ehs.scatter(1, index, mod)

    def extra_repr(self) -> str:
        return f"tokens={self.tokens}, dim={self.dim}, layout={self.layout}, mode={self.mode}"

    # ---------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        pipe: Any,
        mode: str = "special_token",
        tokens: int = 1,
        special_token: str = "<mora-mod>",
        seed: int = 0,
        clip_text: tuple[Any, Any] | None = None,
    ) -> "ModulationEmbedding | None":
        """A modulation initialised for ``pipe`` (not modified) per ``mode``; ``None`` for ``off``."""
        if mode not in MODES:
            raise MoraError(f"unknown modulation mode {mode!r} (known: {', '.join(MODES)})")
        if mode == "off":
            return None
        if tokens < 1:
            raise MoraError("modulation_tokens must be at least 1")
        family = family_of(pipe)
        dim = conditioning_width(pipe)
        with torch.no_grad():
            if mode == "special_token":
                init = special_token_states(pipe, special_token, tokens, clip_text=clip_text)
            else:
                generator = torch.Generator(device="cpu").manual_seed(int(seed))
                rows = torch.randn(tokens, dim, generator=generator)
                rows = rows / rows.norm(dim=-1, keepdim=True) * typical_norm(pipe)
                init = rows
        if init.shape != (tokens, dim):
            raise MoraError(f"modulation init has shape {tuple(init.shape)}, expected {(tokens, dim)}")
        module = cls(init.float().cpu(), layout=layout_of(family), mode=mode)
        return module.to(device_of(denoiser_of(pipe)))
