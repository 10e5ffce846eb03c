"""Text-to-image agent: the first frame of a video from the enhanced prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.base import PipelineAgent, check_seed, check_text

if TYPE_CHECKING:
    from PIL.Image import Image


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
