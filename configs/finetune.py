"""Settings of self-modulated fine-tuning (paper §3.2 Algorithm 1, hyper-parameters of A.9).

``FinetuneSpec``'s defaults are the paper's A.9 values (the GPU defaults); :data:`PAPER_DEFAULTS`
lists them on their own, :data:`TINY_DEFAULTS` are values that make learning visible on a CPU
with the tiny zoo in about a minute. Both are mappings to spread into the spec::

    FinetuneSpec(target="image_to_video", **TINY_DEFAULTS)

Mixed precision: ``mixed_precision`` is applied as ``torch.autocast`` on a CUDA device (bf16
where ``torch.cuda.is_bf16_supported()``, otherwise fp32; fp16 with a gradient scaler). On a CPU
it is applied only when ``mixed_precision_on_cpu`` is true (bf16 only: CPU autocast in fp16 is
not offered) — otherwise a CPU trains in fp32, whatever ``mixed_precision`` says. Trainable
weights, the modulation, the optimizer state and the EMA are always kept in fp32.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from configs.errors import MoraError
from configs.schema import Profile


Target = Literal["text_to_image", "image_to_video"]


class FinetuneSpec(BaseModel):
    """One self-modulated fine-tuning run of one agent, or of several agents trained together
    (Algorithm 1): each agent's denoiser + its modulation embedding, one optimizer step on the
    summed loss."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Target | None = Field(
        default=None,
        description="the one agent trained: image_to_video (SVD or Wan I2V) or text_to_image (SD3)")
    targets: tuple[Target, ...] | None = Field(
        default=None,
        description="agents trained together in one step (e.g. [text_to_image, image_to_video]): "
                    "text-to-image on the selected video's first frame, image-to-video on the video")
    # How much each agent's loss counts in the summed loss of a multi-agent step. modulation_factor
    # (the paper's): agent i's loss is weighted by n·α_i/Σα_j, α_i = ‖m_i‖ its modulation factor;
    # differentiable, so the embeddings learn the allocation. equal: plain sum (ablation).
    loss_weighting: Literal["modulation_factor", "equal"] = "modulation_factor"
    # Self-modulation (§3.2): initialised from a special token (paper), randomly (ablation RI) or off.
    modulation: Literal["special_token", "random", "off"] = "special_token"
    modulation_tokens: int = Field(default=1, ge=1, le=64, description="K: rows of the K×D modulation")
    special_token: str = "<mora-mod>"
    # What is trained besides the modulation.
    method: Literal["full", "lora"] = "full"
    lora_rank: PositiveInt = Field(default=16, description="LoRA rank r (lora_alpha = r: scale 1)")
    # Optimiser and schedule (A.9).
    optimizer: Literal["adamw"] = "adamw"
    learning_rate: float = Field(default=1e-5, gt=0.0)
    weight_decay: float = Field(default=1e-2, ge=0.0, description="AdamW weight decay (torch's default)")
    max_grad_norm: float | None = Field(default=1.0, gt=0.0, description="gradient clipping (None: off)")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine", "polynomial"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    batch_size: PositiveInt = 4
    grad_accumulation: PositiveInt = 1
    gradient_checkpointing: bool = True
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    mixed_precision_on_cpu: bool = Field(default=False, description="autocast bf16 on a CPU too")
    max_steps: PositiveInt = Field(default=12, description="optimizer steps of one round (LR horizon)")
    checkpoint_every: PositiveInt = Field(default=4, description="steps per cached training chunk")
    # Loss weighting. snr_gamma: Min-SNR-γ for SVD's EDM loss; flow families ignore it.
    snr_gamma: float | None = Field(default=5.0, gt=0.0)
    flow_weighting: Literal["logit_normal", "mode", "uniform", "sigma_sqrt", "cosmap"] = Field(
        default="logit_normal", description="SD3/Wan timestep density / loss weighting scheme")
    # EMA of the trained weights (diffusers EMAModel).
    ema: bool = True
    ema_decay: float = Field(default=0.999, gt=0.0, le=1.0)
    ema_start_step: int = Field(default=0, ge=0)
    seed: int = Field(default=0, ge=0, lt=2**63)

    @field_validator("special_token")
    @classmethod
    def _one_word(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("special_token must be a non-empty string without spaces")
        return value

    @model_validator(mode="after")
    def _chunks_fit(self) -> "FinetuneSpec":
        if (self.target is None) == (self.targets is None):
            raise ValueError("name the trained agent(s) with either target or targets")
        if self.targets is not None and (not self.targets or len(set(self.targets)) != len(self.targets)):
            raise ValueError("targets must name distinct agents")
        if self.checkpoint_every > self.max_steps:
            raise ValueError("checkpoint_every cannot exceed max_steps")
        if self.warmup_steps > self.max_steps:
            raise ValueError("warmup_steps cannot exceed max_steps")
        return self

    @property
    def trained(self) -> tuple[str, ...]:
        """The agents this run trains, in chain order (text-to-image first)."""
        names = self.targets if self.targets is not None else (self.target,)
        return tuple(t for t in ("text_to_image", "image_to_video") if t in names)

    @property
    def joint(self) -> bool:
        """Several agents trained together (state and weights keyed per agent)."""
        return self.targets is not None

    def check_profile(self, profile: Profile) -> None:
        """Refuse, before a round samples anything, what only fine-tuning would find: SVD has no
        text encoder, so its special-token modulation needs the CLIP text tower the profile names
        (agents/modulation/initialisation.py)."""
        spec = profile.image_to_video
        if ("image_to_video" in self.trained and self.modulation == "special_token"
                and spec.pipeline.startswith("StableVideoDiffusion") and spec.text_tower is None):
            raise MoraError(f"profile {profile.name}: modulation 'special_token' on SVD needs the "
                            "CLIP text tower paired with its image encoder: name it as "
                            "image_to_video.text_tower or use modulation 'random' or 'off'")

    def checkpoints(self) -> list[int]:
        """The step counts a round stops at to checkpoint: every ``checkpoint_every`` and ``max_steps``."""
        steps = list(range(self.checkpoint_every, self.max_steps, self.checkpoint_every))
        return steps + [self.max_steps]


# The paper's A.9 hyper-parameters (AdamW, lr 1e-5 constant, no warm-up, batch 4, gradient
# accumulation 1, gradient checkpointing, bf16, 12 max steps, checkpoint every 4 steps, SNR gamma
# 5.0, EMA from step 0 with decay 0.999).
PAPER_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "optimizer": "adamw",
    "learning_rate": 1e-5,
    "lr_scheduler": "constant",
    "warmup_steps": 0,
    "batch_size": 4,
    "grad_accumulation": 1,
    "gradient_checkpointing": True,
    "mixed_precision": "bf16",
    "max_steps": 12,
    "checkpoint_every": 4,
    "snr_gamma": 5.0,
    "ema": True,
    "ema_start_step": 0,
    "ema_decay": 0.999,
})

# Learning visible on a CPU with the tiny zoo within about a minute: full fine-tuning, a large
# learning rate, small batches, fp32, no checkpointing (it only costs time at this size), a short
# EMA so the averaged weights move within a few steps.
TINY_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "method": "full",
    "learning_rate": 1e-3,
    "lr_scheduler": "constant",
    "warmup_steps": 0,
    "batch_size": 2,
    "grad_accumulation": 1,
    "gradient_checkpointing": False,
    "mixed_precision": "no",
    "max_steps": 24,
    "checkpoint_every": 8,
    "snr_gamma": 5.0,
    "ema": True,
    "ema_start_step": 0,
    "ema_decay": 0.9,
})
