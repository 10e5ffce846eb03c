"""Each family's training loss, on the conditioning its pipeline builds at inference.

* **sd3** (text-to-image) and **wan** (image-to-video): rectified-flow matching as diffusers'
  ``train_dreambooth_sd3.py``: ``u = compute_density_for_timestep_sampling(spec.flow_weighting,
  logit_mean=0, logit_std=1, mode_scale=1.29)``, the timestep/σ at ``u·N`` of a fresh
  ``FlowMatchEulerDiscreteScheduler`` (SD3: the pipeline's scheduler config; Wan: its
  ``flow_shift``, which is what UniPC's flow sigmas use at inference), ``x_σ = (1-σ)x₀ + σε``,
  target ``ε - x₀``, weight ``compute_loss_weighting_for_sd3(spec.flow_weighting, σ)`` (ones for
  logit_normal). ``snr_gamma`` does not apply: Min-SNR is defined for ε/x₀/v-prediction on
  variance-preserving schedules; the flow families' weighting is the timestep density instead.
  SD3 latents are ``(z - shift) · scale``; Wan's are normalised by the VAE's latents_mean/std and
  the transformer sees ``[x_σ, mask(4), first-frame condition latents]`` built by the pipeline's
  own ``prepare_latents``, the UMT5 prompt embeddings (512 rows) and the CLIP image tokens.
* **svd** (image-to-video): EDM with v-prediction as SVD was trained (and as SVD-Xtend fine-tunes
  it): ``σ ~ LogNormal(0.7, 1.6)``, ``x_σ = x₀ + σε``, the UNet gets ``c_in·x_σ = x_σ/√(σ²+1)``
  with the first frame's (noise-augmented, 0.02) VAE latents on the channel axis, ``c_noise =
  ¼·ln σ``, the CLIP image embedding (+ modulation) and ``added_time_ids = [fps-1, 127, 0.02]``
  (the pipeline's defaults), and the denoised estimate is ``D = x_σ/(σ²+1) - σ/√(σ²+1)·F``
  (EulerDiscreteScheduler's v-prediction). Loss ``w(σ)·‖D - x₀‖²`` with the EDM weight
  ``w = (σ²+1)/σ²`` when ``snr_gamma`` is None, and **Min-SNR-γ** when it is set: with
  ``SNR = 1/σ²`` (σ_data = 1) the x₀-space weight becomes ``min(SNR, γ)`` — i.e. the EDM weight
  times ``min(SNR, γ)/(SNR + 1)``, the factor diffusers' scripts use for v-prediction.

Every family's conditioning comes from the pipeline's own encoding methods (``encode_prompt``,
``encode_image``/``_encode_image``, ``_encode_vae_image``, ``prepare_latents``,
``_get_add_time_ids``), so training sees what sampling feeds the denoiser. Target frames are
encoded with the VAE's distribution mode (deterministic, once per call).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from agents.finetune.data import TrainingSample
from configs.errors import MoraError
from configs.finetune import FinetuneSpec

SVD_P_MEAN, SVD_P_STD = 0.7, 1.6  # EDM σ log-normal for SVD fine-tuning (SVD-Xtend)
SVD_NOISE_AUG = 0.02  # StableVideoDiffusionPipeline's noise_aug_strength default
SVD_MOTION_BUCKET = 127  # ... its motion_bucket_id default
SVD_FPS = 7  # ... its fps default
MODE_SCALE = 1.29  # train_dreambooth_sd3.py's --mode_scale default


def to_pixels(array: np.ndarray) -> torch.Tensor:
    """uint8 ...×H×W×3 -> float ...×3×H×W in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float() / 127.5 - 1.0
    return tensor.movedim(-1, -3)


def _collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Prepared samples (``prepare``'s dicts of batch-1 tensors) stacked on the batch axis."""
    return {key: torch.cat([b[key] for b in batch]) for key in batch[0]}


def _flow_scheduler(config: Any, shift: float | None = None):
    from diffusers import FlowMatchEulerDiscreteScheduler

    if shift is None:
        return FlowMatchEulerDiscreteScheduler.from_config(config)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=config.num_train_timesteps, shift=shift)


class _FlowTrainer:
    """Shared flow-matching loss (SD3, Wan), as diffusers' train_dreambooth_sd3.py."""

    def __init__(self, pipe: Any, spec: FinetuneSpec, device: torch.device):
        self.pipe, self.spec, self.device = pipe, spec, device
        self.scheduler = self._scheduler()

    def _scheduler(self):
        raise NotImplementedError

    def _sigmas(self, batch: int, ndim: int, generator: torch.Generator):
        from diffusers.training_utils import compute_density_for_timestep_sampling

        u = compute_density_for_timestep_sampling(
            weighting_scheme=self.spec.flow_weighting, batch_size=batch, logit_mean=0.0, logit_std=1.0,
            mode_scale=MODE_SCALE, generator=generator)
        count = self.scheduler.config.num_train_timesteps
        indices = (u * count).long().clamp(0, count - 1)
        timesteps = self.scheduler.timesteps[indices].to(self.device)
        sigmas = self.scheduler.sigmas[indices].to(self.device, torch.float32)
        return timesteps, sigmas.view(-1, *([1] * (ndim - 1)))

    def flow_loss(self, x0: torch.Tensor, generator: torch.Generator, predict: Callable) -> torch.Tensor:
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        timesteps, sigmas = self._sigmas(x0.shape[0], x0.ndim, generator)
        noisy = (1.0 - sigmas) * x0 + sigmas * noise
        pred = predict(noisy, timesteps).float()
        target = noise - x0
        weighting = compute_loss_weighting_for_sd3(self.spec.flow_weighting, sigmas=sigmas)
        return torch.mean((weighting.float() * (pred - target) ** 2).reshape(x0.shape[0], -1), 1).mean()


class _SD3Trainer(_FlowTrainer):
    def _scheduler(self):
        return _flow_scheduler(self.pipe.scheduler.config)

    @torch.no_grad()
    def prepare(self, sample: TrainingSample) -> dict[str, torch.Tensor]:
        pipe = self.pipe
        text, _, pooled, _ = pipe.encode_prompt(sample.prompt, None, None, device=self.device,
                                                do_classifier_free_guidance=False, max_sequence_length=256)
        image = to_pixels(sample.target)[None].to(self.device, pipe.vae.dtype)
        latents = pipe.vae.encode(image).latent_dist.mode()
        latents = (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
        return {"x0": latents.float(), "text": text.float(), "pooled": pooled.float()}

    def loss(self, denoiser, mod, batch, generator) -> torch.Tensor:
        b = _collate(batch)
        text = b["text"] if mod is None else mod.append(b["text"])

        def predict(noisy, timesteps):
            return denoiser(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=text,
                            pooled_projections=b["pooled"], return_dict=False)[0]

        return self.flow_loss(b["x0"], generator, predict)


class _WanTrainer(_FlowTrainer):
    TEXT_LENGTH = 512  # WanImageToVideoPipeline.__call__'s max_sequence_length

    def _scheduler(self):
        config = self.pipe.scheduler.config
        shift = getattr(config, "flow_shift", None) or getattr(config, "shift", None) or 1.0
        return _flow_scheduler(config, shift=float(shift))

    @torch.no_grad()
    def prepare(self, sample: TrainingSample) -> dict[str, torch.Tensor]:
        pipe = self.pipe
        frames, height, width = sample.target.shape[:3]
        text = pipe.encode_prompt(sample.prompt, do_classifier_free_guidance=False,
                                  max_sequence_length=self.TEXT_LENGTH, device=self.device)[0]
        two_frames = pipe.transformer.config.pos_embed_seq_len is not None  # first-last-frame model
        last = Image.fromarray(sample.target[-1]) if two_frames else None
        image_embeds = pipe.encode_image([sample.first_frame, last] if two_frames else sample.first_frame,
                                         self.device)
        video = to_pixels(sample.target).movedim(0, 1)[None].to(self.device, pipe.vae.dtype)  # 1×3×T×H×W
        vae = pipe.vae
        latents = vae.encode(video).latent_dist.mode().float()
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
        x0 = (latents - mean) * inv_std
        first = pipe.video_processor.preprocess(sample.first_frame, height=height, width=width)
        first = first.to(self.device, torch.float32)
        last_pixels = None
        if last is not None:
            last_pixels = pipe.video_processor.preprocess(last, height=height, width=width)
            last_pixels = last_pixels.to(self.device, torch.float32)
        _, condition = pipe.prepare_latents(
            first, 1, vae.config.z_dim, height, width, frames, torch.float32, self.device, None,
            torch.zeros_like(x0), last_pixels)
        return {"x0": x0, "text": text.float(), "image": image_embeds.float(), "condition": condition.float()}

    def loss(self, denoiser, mod, batch, generator) -> torch.Tensor:
        b = _collate(batch)
        text = b["text"] if mod is None else mod.append(b["text"])

        def predict(noisy, timesteps):
            return denoiser(hidden_states=torch.cat([noisy, b["condition"]], dim=1), timestep=timesteps,
                            encoder_hidden_states=text, encoder_hidden_states_image=b["image"],
                            return_dict=False)[0]

        return self.flow_loss(b["x0"], generator, predict)


class _SVDTrainer:
    """EDM / v-prediction loss of Stable Video Diffusion (see the module docstring)."""

    def __init__(self, pipe: Any, spec: FinetuneSpec, device: torch.device):
        self.pipe, self.spec, self.device = pipe, spec, device
        if pipe.scheduler.config.prediction_type != "v_prediction":
            raise MoraError("SVD fine-tuning expects a v-prediction scheduler (as SVD ships)")

    @torch.no_grad()
    def prepare(self, sample: TrainingSample) -> dict[str, Any]:
        pipe = self.pipe
        frames, height, width = sample.target.shape[:3]
        image = pipe._encode_image(sample.first_frame, self.device, 1, False)
        vae = pipe.vae
        pixels = to_pixels(sample.target).to(self.device, vae.dtype)  # T×3×H×W
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in pixels.split(8)])
        x0 = (latents.float() * vae.config.scaling_factor)[None]  # 1×T×C×h×w
        first = pipe.video_processor.preprocess(sample.first_frame, height=height, width=width)
        fps = sample.fps if sample.fps is not None else SVD_FPS
        time_ids = pipe._get_add_time_ids(fps - 1, SVD_MOTION_BUCKET, SVD_NOISE_AUG, torch.float32, 1, 1, False)
        return {"x0": x0, "image": image.float(), "first": first.float(), "time_ids": time_ids.to(self.device)}

    def loss(self, denoiser, mod, batch, generator) -> torch.Tensor:
        pipe = self.pipe
        x0 = torch.cat([b["x0"] for b in batch])
        frames = x0.shape[1]
        with torch.no_grad():  # the first frame as the pipeline conditions on it: noise-augmented VAE latents
            first = torch.cat([b["first"] for b in batch])
            first = first + SVD_NOISE_AUG * torch.randn(first.shape, generator=generator)
            cond = pipe._encode_vae_image(first.to(self.device), self.device, 1, False).float()
            cond = cond.unsqueeze(1).repeat(1, frames, 1, 1, 1)
        image = torch.cat([b["image"] for b in batch])
        time_ids = torch.cat([b["time_ids"] for b in batch])
        if mod is not None:
            image = mod.append(image)
        batch_size = x0.shape[0]
        sigmas = torch.exp(SVD_P_MEAN + SVD_P_STD * torch.randn(batch_size, generator=generator))
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        sigmas = sigmas.to(self.device).view(-1, 1, 1, 1, 1)
        noisy = x0 + sigmas * noise
        c_in = 1.0 / torch.sqrt(sigmas**2 + 1)
        c_noise = 0.25 * torch.log(sigmas.flatten())
        out = denoiser(torch.cat([c_in * noisy, cond], dim=2), c_noise, encoder_hidden_states=image,
                       added_time_ids=time_ids, return_dict=False)[0].float()
        denoised = out * (-sigmas / torch.sqrt(sigmas**2 + 1)) + noisy / (sigmas**2 + 1)
        snr = sigmas**-2
        if self.spec.snr_gamma is None:
            weight = 1.0 + snr  # EDM λ(σ) = (σ² + σ_data²)/(σ·σ_data)², σ_data = 1
        else:
            weight = torch.clamp(snr, max=self.spec.snr_gamma)  # Min-SNR-γ in x₀ space
        return torch.mean((weight * (denoised - x0) ** 2).reshape(batch_size, -1), 1).mean()


TRAINERS = {"sd3": _SD3Trainer, "wan": _WanTrainer, "svd": _SVDTrainer}
