"""Image-to-video agent: animate a first frame (SVD, Wan, LTX, CogVideoX image-to-video)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from agents.base import BatchPlan, PipelineAgent, batch_view, check_seed
from configs.errors import MoraError

if TYPE_CHECKING:
    from PIL.Image import Image


def first_video(result) -> list["Image"]:
    """The frames of the first video in a pipeline output, as PIL images."""
    return video_frames(result.frames[0])


def all_videos(result) -> list[list["Image"]]:
    """The frames of every video in a pipeline output, as PIL images."""
    return [video_frames(frames) for frames in result.frames]


def wan_num_frames(pipe, frames: int) -> int:
    """The ``num_frames`` to ask a Wan pipeline for to get ``frames`` frames. Wan's pipelines round
    ``num_frames`` up to ``1 + k * vae.config.scale_factor_temporal`` by testing
    ``num_frames % scale_factor_temporal != 1`` (diffusers pipelines/wan/pipeline_wan_i2v.py
    ``__call__``), which is true of every count when the factor is 1 (a VAE with no temporal
    compression: the shapes zoo's, agents/shapes/architectures.py): it would add a frame the VAE's
    4-frame chunks then drop. Asking for one less gives the count asked for."""
    factor = getattr(getattr(pipe, "vae", None), "config", {}).get("scale_factor_temporal")
    return frames - 1 if factor == 1 else frames


def video_frames(frames) -> list["Image"]:
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
        # 3. Animate; text goes in only where the model takes it (SVD does not; Wan without a
        #    prompt gets a neutral default, see PipelineAgent.text_for).
        return first_video(self.run(seed, image=image, prompt=self.text_for(prompt)[0]))

    def call_args(self, **semantic: Any) -> dict[str, Any]:
        args = super().call_args(**semantic)
        if "num_frames" in args:  # the profile's count, as a Wan pipeline must be asked for it
            args["num_frames"] = wan_num_frames(self.pipe, args["num_frames"])
        return args

    def batch(self, images: list["Image"], prompt: str | None, seeds: list[int],
              exact: bool = True) -> list[list["Image"]]:
        """A video per (first frame, seed), each identical to ``self(image, prompt, seed)``
        (``exact``; otherwise equal up to float rounding): one batched pipeline call where the
        pipeline supports it, one call per seed otherwise."""
        # 1. Validate.
        if len(images) != len(seeds):
            raise MoraError(f"{len(images)} images for {len(seeds)} seeds")
        for image, seed in zip(images, seeds):
            self.check_inputs(image, seed)
        # 2. Conform the first frames to the profile's size.
        size = (self.spec.width, self.spec.height)
        images = [image.convert("RGB").resize(size) for image in images]
        # 3. Animate them all in one call, or one by one.
        prompt = self.text_for(prompt)[0]
        result = self.run_batch(list(seeds), exact, image=images, prompt=prompt)
        if result is None:
            return [first_video(self.run(seed, image=image, prompt=prompt))
                    for image, seed in zip(images, seeds)]
        return all_videos(result)

    def batch_plan(self, pipe: Any, count: int) -> BatchPlan | None:
        name = type(pipe).__name__
        if name == "StableVideoDiffusionPipeline":
            return BatchPlan(batch_view(pipe, _svd_batch_class()), ("unet.forward",))
        if name == "WanImageToVideoPipeline" and not pipe.config.get("expand_timesteps"):
            return BatchPlan(batch_view(pipe, _wan_batch_class()),
                             ("transformer.forward", "transformer_2.forward", "vae.decode"),
                             {"num_videos_per_prompt": count})
        return None


@functools.cache
def _svd_batch_class() -> type:
    """SVD for a list of first frames: image encodings and VAE decoding go frame by frame /
    video by video as in a single call (decode chunks never straddle two videos)."""
    import torch
    from diffusers import StableVideoDiffusionPipeline

    class SVDBatchPipeline(StableVideoDiffusionPipeline):
        def _encode_image(self, image, device, num_videos_per_prompt, do_classifier_free_guidance):
            if not isinstance(image, list):
                return super()._encode_image(image, device, num_videos_per_prompt,
                                             do_classifier_free_guidance)
            embeds = torch.cat([super(SVDBatchPipeline, self)._encode_image(
                one, device, num_videos_per_prompt, False) for one in image])
            return _with_zero_negative(embeds, do_classifier_free_guidance)

        def _encode_vae_image(self, image, device, num_videos_per_prompt,
                              do_classifier_free_guidance):
            latents = torch.cat([super(SVDBatchPipeline, self)._encode_vae_image(
                image[i:i + 1], device, num_videos_per_prompt, False) for i in range(len(image))])
            return _with_zero_negative(latents, do_classifier_free_guidance)

        def decode_latents(self, latents, num_frames, decode_chunk_size=14):
            return torch.cat([super(SVDBatchPipeline, self).decode_latents(
                latents[i:i + 1], num_frames, decode_chunk_size) for i in range(len(latents))])

    return SVDBatchPipeline


def _with_zero_negative(x, do_classifier_free_guidance: bool):
    import torch

    return torch.cat([torch.zeros_like(x), x]) if do_classifier_free_guidance else x


@functools.cache
def _wan_batch_class() -> type:
    """Wan image-to-video for a list of first frames (diffusers' own handles one image per
    call): the CLIP image embedding and the first-frame condition latents per image, each
    image's noise from its own generator."""
    import torch
    from diffusers import WanImageToVideoPipeline

    class WanBatchImageToVideoPipeline(WanImageToVideoPipeline):
        def check_inputs(self, prompt, negative_prompt, image, *args, **kwargs):
            for one in image if isinstance(image, list) else [image]:
                super().check_inputs(prompt, negative_prompt, one, *args, **kwargs)

        def encode_image(self, image, device=None):
            if not isinstance(image, list):
                return super().encode_image(image, device)
            return torch.cat([super(WanBatchImageToVideoPipeline, self).encode_image(one, device)
                              for one in image])

        def prepare_latents(self, image, batch_size, num_channels_latents=16, height=480,
                            width=832, num_frames=81, dtype=None, device=None, generator=None,
                            latents=None, last_image=None):
            if not isinstance(generator, list) or image.shape[0] != batch_size:
                return super().prepare_latents(image, batch_size, num_channels_latents, height,
                                               width, num_frames, dtype, device, generator,
                                               latents, last_image)
            rows = [super(WanBatchImageToVideoPipeline, self).prepare_latents(
                image[i:i + 1], 1, num_channels_latents, height, width, num_frames, dtype,
                device, generator[i], None if latents is None else latents[i:i + 1],
                None if last_image is None else last_image[i:i + 1]) for i in range(batch_size)]
            return tuple(torch.cat(parts) for parts in zip(*rows))

    return WanBatchImageToVideoPipeline
