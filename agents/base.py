"""What every diffusers-backed agent shares: its spec, its runtime, a lazily loaded pipeline."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from agents.cache import MODEL_CACHE, ModelCache
from agents.loading import Runtime, load_pipeline
from configs.schema import PipelineSpec
from mora.errors import MoraError


@dataclass(frozen=True)
class FinetunedWeights:
    """Fine-tuned weights to sample with: ``key`` names them (a store key), ``load`` fetches them."""

    key: str
    load: Callable[[], dict]


class PipelineAgent:
    """An agent backed by one diffusers pipeline, configured by a profile's :class:`PipelineSpec`.

    Pipelines differ in what they accept (SVD takes no prompt, Wan takes ``last_image``), so
    each call builds the semantic arguments once and passes those the pipeline's ``__call__``
    declares.
    """

    def __init__(self, spec: PipelineSpec, runtime: Runtime, cache: ModelCache = MODEL_CACHE,
                 weights: FinetunedWeights | None = None):
        self.spec = spec
        self.runtime = runtime
        self.cache = cache
        self.weights = weights

    def with_weights(self, weights: FinetunedWeights | None) -> "PipelineAgent":
        """The same agent sampling with fine-tuned weights (None: the base weights)."""
        return type(self)(self.spec, self.runtime, self.cache, weights)

    @property
    def pipe(self) -> Any:
        base = load_pipeline(self.spec, self.runtime, self.cache)
        if self.weights is None:
            return base
        # A private copy per checkpoint: the shared base pipeline is never modified.
        key = ("finetuned", self.spec.pipeline, self.spec.model, self.runtime, self.weights.key)
        return self.cache.get(key, lambda: _finetuned_copy(base, self.weights.load()))

    @cached_property
    def accepted(self) -> frozenset[str]:
        return frozenset(inspect.signature(type(self.pipe).__call__).parameters)

    @property
    def model_ref(self) -> dict[str, str | None]:
        revision = self.spec.revision
        if self.weights is not None:
            revision = f"{revision or 'base'}+finetuned:{self.weights.key}"
        return {"id": self.spec.model, "revision": revision, "role": type(self).__name__}

    def generator(self, seed: int):
        import torch

        # CPU generators give the same noise on every device (diffusers moves it).
        return torch.Generator(device="cpu").manual_seed(seed)

    def run(self, seed: int, **semantic: Any) -> Any:
        """Call the pipeline with the profile defaults, ``semantic`` args it accepts and the seed."""
        spec = self.spec
        args: dict[str, Any] = {
            "height": spec.height,
            "width": spec.width,
            "num_inference_steps": spec.steps,
            "guidance_scale": spec.guidance,
            "max_guidance_scale": spec.guidance,  # SVD's name for it
            "negative_prompt": spec.negative_prompt,
            "num_frames": spec.num_frames,
            "fps": spec.fps,
            "strength": spec.strength,
            "output_type": "pil",
        }
        args.update(semantic)
        args = {k: v for k, v in args.items() if v is not None and k in self.accepted}
        args.update(spec.call_kwargs)
        args["generator"] = self.generator(seed)
        return self.pipe(**args)


def _finetuned_copy(base: Any, weights: dict) -> Any:
    import copy

    from agents.finetune import apply_weights

    pipe = copy.deepcopy(base)
    apply_weights(pipe, weights)
    return pipe


def check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise MoraError(f"seed must be an integer in [0, 2**63), got {seed!r}")


def check_text(name: str, text: str, max_chars: int = 2000) -> str:
    if not isinstance(text, str) or not text.strip():
        raise MoraError(f"{name} is empty")
    if len(text) > max_chars:
        raise MoraError(f"{name} is {len(text)} characters long (at most {max_chars})")
    if any(ord(c) < 32 and c not in "\t\n" for c in text):
        raise MoraError(f"{name} contains control characters")
    return " ".join(text.split())
