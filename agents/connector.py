"""Video connector agent: a transition from clip A's last frame to clip B's first frame."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.base import PipelineAgent, check_seed
from agents.image_to_video import first_video
from configs.errors import MoraError

if TYPE_CHECKING:
    from PIL.Image import Image


class ConnectorAgent(PipelineAgent):
    """First-last-frame video models (Wan FLF2V: ``pipe(image=first, last_image=last)``)."""

    def check_inputs(self, first: "Image", last: "Image", seed: int) -> None:
        check_seed(seed)
        if "last_image" not in self.accepted:
            raise MoraError(f"{self.spec.pipeline} cannot connect videos: it takes no last_image")

    def __call__(self, first: "Image", last: "Image", prompt: str | None, seed: int) -> list["Image"]:
        # 1. Validate.
        self.check_inputs(first, last, seed)
        # 2. Conform both keyframes to the profile's size.
        size = (self.spec.width, self.spec.height)
        first, last = first.convert("RGB").resize(size), last.convert("RGB").resize(size)
        # 3. Generate the transition between them.
        return first_video(self.run(seed, image=first, last_image=last, prompt=self.text_for(prompt)[0]))
