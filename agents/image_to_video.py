"""Image-to-video agent: animate a first frame (SVD, Wan, LTX, CogVideoX image-to-video)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.base import PipelineAgent, check_seed
from mora.errors import MoraError

if TYPE_CHECKING:
    from PIL.Image import Image


def first_video(result) -> list["Image"]:
    """The frames of the first video in a pipeline output, as PIL images."""
    frames = result.frames[0]
    if not isinstance(frames, list):  # some pipelines ignore output_type for videos
        from PIL import Image as PILImage
        import numpy as np

        array = np.asarray(frames)
        if array.dtype != np.uint8:
            array = (array.clip(0, 1) * 255).round().astype(np.uint8)
        frames = [PILImage.fromarray(f) for f in array]
    return frames


class ImageToVideoAgent(PipelineAgent):
    def check_inputs(self, image: "Image", seed: int) -> None:
        check_seed(seed)
        if image.width < 8 or image.height < 8:
            raise MoraError(f"image is {image.width}x{image.height}; at least 8x8 is needed")

    def __call__(self, image: "Image", prompt: str | None, seed: int) -> list["Image"]:
        # 1. Validate.
        self.check_inputs(image, seed)
        # 2. Conform the first frame to the profile's size.
        image = image.convert("RGB").resize((self.spec.width, self.spec.height))
        # 3. Animate; text goes in only where the model takes it (SVD does not).
        return first_video(self.run(seed, image=image, prompt=prompt))
