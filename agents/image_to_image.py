"""Image-to-image agent: edit a frame by instruction or restyle it (SD3 img2img, InstructPix2Pix)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.base import PipelineAgent, check_seed, check_text
from configs.errors import MoraError

if TYPE_CHECKING:
    from PIL.Image import Image


class ImageToImageAgent(PipelineAgent):
    def check_inputs(self, image: "Image", instruction: str, seed: int) -> str:
        check_seed(seed)
        if image.width < 8 or image.height < 8:
            raise MoraError(f"image is {image.width}x{image.height}; at least 8x8 is needed")
        return check_text("instruction", instruction)

    def __call__(self, image: "Image", instruction: str, seed: int,
                 strength: float | None = None) -> "Image":
        # 1. Validate.
        instruction = self.check_inputs(image, instruction, seed)
        # 2. Conform the source to the profile's size (the pipelines keep the input size).
        image = image.convert("RGB").resize((self.spec.width, self.spec.height))
        # 3. Edit.
        result = self.run(seed, prompt=instruction, image=image,
                          strength=strength if strength is not None else self.spec.strength)
        return result.images[0]
