"""Pydantic schema of a profile: which model each agent loads and how it is called."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

Dtype = Literal["float32", "float16", "bfloat16"]
Device = Literal["cpu", "cuda", "mps", "auto"]
# How fine-tuned weights are named wherever a profile is: a training round of the store, a
# checkpoint key in it, the newest round's, or explicitly the base weights.
WEIGHTS_REF_PATTERN = r"^(round:[a-z0-9][a-z0-9_-]{0,79}|store://\S+|latest|base)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextTowerSpec(_Strict):
    """A CLIP text tower (tokenizer + ``CLIPTextModelWithProjection``) loaded with
    ``from_pretrained`` like any model: a hub id, a local folder or ``tiny:<name>``, optionally a
    subfolder of it. A whole CLIP repository works (its vision tower is not loaded)."""

    model: str = Field(min_length=1, max_length=1000)
    subfolder: str | None = Field(default=None, max_length=200)
    revision: str | None = None


class PipelineSpec(_Strict):
    """One diffusers pipeline: where its weights are and the defaults it is called with.

    ``model`` is a hub id (``stabilityai/stable-video-diffusion-img2vid-xt``), a local folder,
    or ``tiny:<name>`` for a model of the offline tiny zoo.
    """

    pipeline: str = Field(description="diffusers pipeline class, e.g. StableDiffusion3Pipeline")
    model: str
    revision: str | None = None
    variant: str | None = None
    # Upper bounds far above any real model's, so a typo fails at load, not after an hour.
    height: int = Field(ge=8, le=4096)
    width: int = Field(ge=8, le=4096)
    num_frames: int | None = Field(default=None, ge=1, le=1024)
    fps: int | None = Field(default=None, ge=1, le=240)
    steps: int = Field(ge=1, le=1000)
    guidance: float = Field(ge=0.0, le=100.0)
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    negative_prompt: str | None = None
    offload: Literal["none", "model", "sequential"] = "none"
    vae_slicing: bool = False
    vae_tiling: bool = False
    attention_slicing: bool = False
    call_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra pipeline kwargs")
    finetuned: str | None = Field(default=None, max_length=1000, pattern=WEIGHTS_REF_PATTERN,
                                  description="fine-tuned weights this agent samples with: "
                                  "round:<round id>, store://<key> or latest (see tasks/weights.py)")
    without: tuple[str, ...] = Field(default=(), description="components loaded as None, e.g. "
                                     "SD3 without T5-XXL: [text_encoder_3, tokenizer_3]")
    text_tower: TextTowerSpec | None = Field(
        default=None, description="SVD only: the CLIP text tower paired with its image encoder "
        "(SVD-XT: laion/CLIP-ViT-H-14-laion2B-s32B-b79K), loaded only to initialise the "
        "self-modulation from a special token (agents/modulation/initialisation.py)")

    @model_validator(mode="after")
    def _text_tower_for_svd(self) -> "PipelineSpec":
        # SD3 and Wan encode the special token with their own text encoders.
        if self.text_tower is not None and not self.pipeline.startswith("StableVideoDiffusion"):
            raise ValueError("text_tower applies to StableVideoDiffusionPipeline agents only "
                             "(other pipelines use their own text encoder)")
        return self


class PromptSpec(_Strict):
    """The prompt enhancer: a template (no model), an OpenAI-compatible chat endpoint, a local LM,
    or the `shapes` world's grammar (``world``: canonical captions, agents/prompt.py)."""

    backend: Literal["template", "openai", "transformers", "world"] = "template"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: PositiveInt = 120
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    timeout_s: float = Field(default=60.0, gt=0.0)

    @model_validator(mode="after")
    def _backend_needs(self) -> "PromptSpec":
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("prompt backend 'openai' needs base_url and model")
        if self.backend == "transformers" and not self.model:
            raise ValueError("prompt backend 'transformers' needs model")
        return self


class Profile(_Strict):
    """A named set of agents and the device they run on."""

    name: str
    description: str = ""
    dtype: Dtype = "float32"
    device: Device = "auto"
    threads: PositiveInt | None = Field(default=None, description="torch CPU threads (None: "
                                        "torch's default); 1 keeps tiny models fast on busy CPUs")
    prompt: PromptSpec = PromptSpec()
    text_to_image: PipelineSpec
    image_to_image: PipelineSpec
    image_to_video: PipelineSpec
    connector: PipelineSpec

    @model_validator(mode="after")
    def _videos_have_frames(self) -> "Profile":
        for role in ("image_to_video", "connector"):
            spec: PipelineSpec = getattr(self, role)
            if spec.num_frames is None or spec.fps is None:
                raise ValueError(f"{role} needs num_frames and fps")
        return self
