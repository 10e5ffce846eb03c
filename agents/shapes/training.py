"""Training the `shapes` zoo on its world (configs/world/), and measuring what it learnt.

* :func:`train_vae`: a VAE on world frames (SD3's ``AutoencoderKL``) or clips (Wan's
  ``AutoencoderKLWan``): L2 + L1 reconstruction, a KL weight of 1e-6 as latent-diffusion
  autoencoders use, on random crops (a convolutional VAE is translation equivariant, so a 32x32
  crop teaches what a 64x64 frame does for a quarter of the work); then the latents'
  normalisation as each pipeline applies it (SD3: ``(z - shift_factor) * scaling_factor``; Wan:
  per-channel ``latents_mean``/``latents_std``), unit variance.
* :func:`train_denoiser`: the denoiser with the project's own fine-tuning
  (agents/finetune/, full fine-tuning, no modulation: this makes the base model the loop later
  fine-tunes), on (caption, first frame) samples of the world's train split for text-to-image,
  (caption, first frame, clip) for image-to-video.
* :func:`first_frame_rates`, :func:`animation_rates`: sample with the pipeline and read the
  output back (metrics/world.py ``read_clip``): how often colour, shape, background (and, for
  clips, the motion) are the caption's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from configs.world import Scene, sample_scenes
from configs.world.render import render


@dataclass(frozen=True)
class VaeRecipe:
    steps: int = 4000
    batch_size: int = 32
    crop: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    kl_weight: float = 1e-6
    l1_weight: float = 0.5


@dataclass(frozen=True)
class DenoiserRecipe:
    steps: int = 6000
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995


def world_frames(count: int, seed: int, split: str = "train") -> tuple[list[Scene], np.ndarray]:
    """``count`` scenes of ``split`` and each one's first frame (``count x 64 x 64 x 3``)."""
    scenes, clips = world_clips(count, seed, split)
    return scenes, clips[:, 0]


def world_clips(count: int, seed: int, split: str = "train", frames: int = 9
                ) -> tuple[list[Scene], np.ndarray]:
    """``count`` scenes of ``split`` and each one's clip (``count x frames x 64 x 64 x 3``)."""
    scenes = sample_scenes(count, seed, split)
    return scenes, np.stack([render(s, seed=seed * 1_000_003 + i, frames=frames)
                             for i, s in enumerate(scenes)])


def train_vae(vae: Any, frames: np.ndarray, recipe: VaeRecipe, seed: int = 0,
              on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``vae`` in place on ``frames``, then set the latents' normalisation from all of
    them: an ``AutoencoderKL`` on images (N x H x W x 3 uint8; SD3's ``shift_factor`` and
    ``scaling_factor``) or an ``AutoencoderKLWan`` on clips (N x T x H x W x 3; Wan's per-channel
    ``latents_mean`` and ``latents_std``, as the Wan pipelines read them)."""
    import torch
    from diffusers.optimization import get_scheduler

    from agents.finetune.losses import to_pixels

    video = frames.ndim == 5
    pixels = to_pixels(frames)
    if video:
        pixels = pixels.movedim(1, 2)  # N x 3 x T x H x W, as the 3D VAE takes it
    generator = torch.Generator().manual_seed(seed)
    trainable = [p for p in vae.parameters() if p.requires_grad]  # architectures.py freezes some
    optimizer = torch.optim.AdamW(trainable, lr=recipe.learning_rate, weight_decay=0.0)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=recipe.warmup_steps,
                             num_training_steps=recipe.steps)
    size = pixels.shape[-1]
    losses = []
    vae.train()
    for step in range(recipe.steps):
        index = torch.randint(0, len(pixels), (recipe.batch_size,), generator=generator)
        top, left = torch.randint(0, size - recipe.crop + 1, (2,), generator=generator).tolist()
        x = pixels[index][..., top:top + recipe.crop, left:left + recipe.crop]
        posterior = vae.encode(x).latent_dist
        out = vae.decode(posterior.sample(generator=generator)).sample
        loss = (torch.nn.functional.mse_loss(out, x)
                + recipe.l1_weight * torch.nn.functional.l1_loss(out, x)
                + recipe.kl_weight * posterior.kl().mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses[-1])
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mode()
                             for chunk in pixels.split(64 if video else 256)])
    if video:
        channels = latents.movedim(1, 0).reshape(latents.shape[1], -1)
        vae.register_to_config(latents_mean=channels.mean(1).tolist(),
                               latents_std=channels.std(1).tolist())
    else:
        vae.register_to_config(shift_factor=float(latents.mean()),
                               scaling_factor=float(1.0 / latents.std()))
    return losses


def vae_rates(vae: Any, frames: np.ndarray, scenes: list[Scene]) -> dict[str, float]:
    """How often a reconstructed frame (or clip: N x T x H x W x 3) still reads as its scene."""
    import torch

    from agents.finetune.losses import to_pixels

    video = frames.ndim == 5
    pixels = to_pixels(frames)
    if video:
        pixels = pixels.movedim(1, 2)
    with torch.no_grad():
        out = torch.cat([vae.decode(vae.encode(chunk).latent_dist.mode()).sample
                         for chunk in pixels.split(64 if video else 256)])
    if video:
        out = out.movedim(2, 1)  # N x T x 3 x H x W
    decoded = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).numpy()
    return _rates(scenes, decoded if video else decoded[:, None])


def train_denoiser(pipe: Any, scenes: list[Scene], frames: np.ndarray, recipe: DenoiserRecipe,
                   seed: int = 0, on_step: Callable[[int, float, float], None] | None = None
                   ) -> list[float]:
    """Train ``pipe``'s denoiser in place with the project's fine-tuning code
    (agents/finetune/): full fine-tuning, EMA, no modulation. ``frames``: first frames
    (N x H x W x 3: a text-to-image pipeline learns caption -> frame) or clips (N x T x H x W x 3:
    an image-to-video pipeline learns caption + first frame -> clip)."""
    from PIL import Image

    from agents.finetune import TrainingSample, apply_weights, finetune, inference_weights
    from configs.finetune import FinetuneSpec

    video = frames.ndim == 5
    samples = [TrainingSample(prompt=s.caption, first_frame=Image.fromarray(f[0] if video else f),
                              target=f) for s, f in zip(scenes, frames)]
    spec = FinetuneSpec(
        target="image_to_video" if video else "text_to_image", method="full", modulation="off",
        learning_rate=recipe.learning_rate, weight_decay=0.0, lr_scheduler="cosine",
        warmup_steps=recipe.warmup_steps, batch_size=recipe.batch_size, max_steps=recipe.steps,
        checkpoint_every=recipe.steps, gradient_checkpointing=False, mixed_precision="no",
        ema=True, ema_decay=recipe.ema_decay, seed=seed)
    state, losses = finetune(pipe, spec, samples, until_step=recipe.steps, on_step=on_step,
                             device="cpu")
    apply_weights(pipe, inference_weights(state))
    return losses


def first_frame_rates(pipe: Any, scenes: list[Scene], steps: int, guidance: float,
                      seed: int = 0) -> dict[str, float]:
    """Sample each scene's caption once (seed ``seed + i``) and read the image back."""
    import torch

    images = []
    for i, scene in enumerate(scenes):
        out = pipe(scene.caption, height=64, width=64, num_inference_steps=steps,
                   guidance_scale=guidance, output_type="np",
                   generator=torch.Generator().manual_seed(seed + i))
        images.append((out.images[0] * 255).round().astype(np.uint8))
    return _rates(scenes, np.stack(images)[:, None])


def animation_rates(pipe: Any, scenes: list[Scene], first_frames: np.ndarray, steps: int,
                    guidance: float, frames: int, seed: int = 0) -> dict[str, float]:
    """Animate each scene's first frame with its caption (seed ``seed + i``) and read the clip
    back: the shape and colour kept, the motion the caption's."""
    import torch
    from PIL import Image

    from agents.image_to_video import wan_num_frames

    clips = []
    for i, (scene, first) in enumerate(zip(scenes, first_frames)):
        out = pipe(image=Image.fromarray(first), prompt=scene.caption, height=64, width=64,
                   num_frames=wan_num_frames(pipe, frames), num_inference_steps=steps,
                   guidance_scale=guidance, output_type="np",
                   generator=torch.Generator().manual_seed(seed + i))
        clips.append((out.frames[0] * 255).round().astype(np.uint8))
    return _rates(scenes, np.stack(clips))


def _rates(scenes: list[Scene], clips: np.ndarray) -> dict[str, float]:
    """Read each clip (N x T x H x W x 3; T = 1 for images) back and count how often each
    attribute is the scene's (the motion too, for clips)."""
    from metrics.world import read_clip

    names = ("colour", "shape", "background") + (("motion",) if clips.shape[1] > 1 else ())
    readings = [read_clip(clip) for clip in clips]
    hits = {name: [getattr(r, name) == getattr(s, name) for r, s in zip(readings, scenes)]
            for name in names}
    rates = {name: float(np.mean(values)) for name, values in hits.items()}
    rates["all"] = float(np.mean([all(v) for v in zip(*hits.values())]))
    return rates
