"""Text-to-image agent: the first frame of a video from the enhanced prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.base import BatchPlan, PipelineAgent, check_seed, check_text

if TYPE_CHECKING:
    from PIL.Image import Image

# Pipelines whose batched call (one generator per image) is checked to give each image exactly
# as its own call does, given the parts that run per sample.
BATCHABLE = {"StableDiffusion3Pipeline": ("transformer.forward", "vae.decode")}


class TextToImageAgent(PipelineAgent):
    """SD3 / SDXL (real profiles) or the tiny SD3 from the offline zoo."""

    def check_inputs(self, prompt: str, seed: int) -> str:
        check_seed(seed)
        return check_text("prompt", prompt)

    def __call__(self, prompt: str, seed: int) -> "Image":
        # 1. Validate.
        prompt = self.check_inputs(prompt, seed)
        # 2. Generate at the profile's size and return the single image.
        return self.run(seed, prompt=prompt).images[0]

    def batch(self, prompt: str, seeds: list[int], exact: bool = True) -> list["Image"]:
        """One image per seed, each identical to ``self(prompt, seed)`` (``exact``; otherwise
        equal up to float rounding): one batched pipeline call where the pipeline supports it,
        one call per seed otherwise."""
        # 1. Validate.
        for seed in seeds:
            prompt = self.check_inputs(prompt, seed)
        # 2. All seeds in one call (a generator each), or one by one.
        result = self.run_batch(list(seeds), exact, prompt=prompt)
        if result is None:
            return [self.run(seed, prompt=prompt).images[0] for seed in seeds]
        return list(result.images)

    def batch_plan(self, pipe: Any, count: int) -> BatchPlan | None:
        parts = BATCHABLE.get(type(pipe).__name__)
        if parts is None:
            return None
        return BatchPlan(pipe, parts, {"num_images_per_prompt": count})
