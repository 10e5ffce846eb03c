"""Self-modulated fine-tuning (paper §3.2, Algorithm 1) of an agent's diffusion model.

``finetune(pipe, spec, samples, until_step=n)`` trains the pipeline's denoiser (the SD3/Wan
transformer or the SVD UNet; fully or with LoRA) together with a modulation embedding
(:mod:`agents.modulation`) on the selected samples, and returns a :class:`TrainState` that holds
everything needed to continue exactly where it stopped, so a round can train in
checkpoint-sized chunks (each a cached task): ``finetune(until_step=8)`` gives the same weights
as ``finetune(until_step=4)`` followed by ``finetune(start=state, until_step=8)``.

Several agents train together (``spec.targets``, Algorithm 1) when ``pipe`` is a ``{target:
pipeline}`` mapping: one optimizer step over every agent's weights and modulation embedding on
the agents' summed loss, each loss weighted by its agent's share of the modulation factors
(:func:`_total_loss`). The state then keys each agent's tensors under ``<target>/`` and
:func:`inference_weights` gives one agent's weights at a time.

The pipeline is never modified and keeps its placement: training runs on the profile's device
(``finetune(device=…)``, whatever the pipeline's offload setting) on a new module holding the
denoiser's weights without the pipeline's offload hooks (fp32 copies for full fine-tuning; for
LoRA the frozen base stays in the profile's dtype and only the adapters, the modulation, the
optimizer state and the EMA are fp32), and the frozen parts (VAE, text and image encoders) are
only called under ``no_grad``. The weights sampling uses come from :func:`inference_weights` and
are loaded into a pipeline the caller owns (a fresh ``from_pretrained``, not the process-wide
cache) by :func:`apply_weights`. Checkpoints stream to and from safetensors files
(:func:`save_state`, :func:`load_state`): no whole-file bytes object.

Losses, per family
------------------
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

Randomness is a pure function of ``(spec.seed, step, micro-batch)`` (noise, timesteps, the
noise augmentation) and ``(spec.seed, epoch)`` (sample order), drawn on the CPU, so chunked
training needs no RNG state and matches uninterrupted training; the state also carries the
AdamW moments, the EMA shadows and the LR schedule position (= step).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from agents.modulation import (
    ModulationEmbedding,
    denoiser_of,
    family_of,
    install,
    layout_of,
    uninstall,
)
from configs.finetune import FinetuneSpec
from configs.errors import MoraError

STATE_FORMAT = "mora-finetune-state/1"
WEIGHTS_FORMAT = "mora-finetune-weights/1"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
SVD_P_MEAN, SVD_P_STD = 0.7, 1.6  # EDM σ log-normal for SVD fine-tuning (SVD-Xtend)
SVD_NOISE_AUG = 0.02  # StableVideoDiffusionPipeline's noise_aug_strength default
SVD_MOTION_BUCKET = 127  # ... its motion_bucket_id default
SVD_FPS = 7  # ... its fps default
MODE_SCALE = 1.29  # train_dreambooth_sd3.py's --mode_scale default
_MODULATION = "modulation"
_TARGETS = {"sd3": "text_to_image", "wan": "image_to_video", "svd": "image_to_video"}


@dataclass
class TrainingSample:
    """One selected example: the prompt, the first frame it was conditioned on, the chosen output.

    ``target`` is ``T×H×W×3`` uint8 for a video (image-to-video) or ``H×W×3`` for an image
    (text-to-image; ``first_frame`` is unused there). ``fps`` is SVD's fps conditioning (None:
    the pipeline's default, 7).
    """

    prompt: str
    first_frame: Image.Image
    target: np.ndarray
    fps: int | None = None


@dataclass
class TrainState:
    """Everything to resume exactly, as tensors (safetensors-ready) and string metadata.

    ``tensors``: ``param/<name>`` trainable weights (full: every denoiser parameter; LoRA: the
    A/B matrices; ``param/modulation``), ``ema/<name>`` EMA shadows, ``adam/<name>/{exp_avg,
    exp_avg_sq,step}`` AdamW state, ``amp/{scale,growth_tracker}`` (fp16 only).
    """

    step: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# Public API


@dataclass
class _Agent:
    """One trained agent of a run: its pipeline, trainer, training copy and modulation."""

    target: str
    pipe: Any
    family: str
    prefix: str  # "" (one agent: the state's historical keys) or "<target>/" (several)
    trainer: Any = None
    denoiser: torch.nn.Module | None = None
    mod: ModulationEmbedding | None = None
    prepared: list = field(default_factory=list)


def finetune(
    pipe: Any,
    spec: FinetuneSpec,
    samples: list[TrainingSample],
    *,
    start: TrainState | None = None,
    until_step: int,
    on_step: Callable[[int, float, float], None] | None = None,
    modulation: ModulationEmbedding | dict[str, ModulationEmbedding] | None = None,
    device: str | torch.device | None = None,
    text_tower: Callable[[], tuple[Any, Any]] | None = None,
) -> tuple[TrainState, list[float]]:
    """Train from ``start`` (or fresh from the pipelines' weights) up to ``until_step`` optimizer steps.

    ``pipe``: the trained agent's pipeline, or with ``spec.targets`` a mapping ``{target:
    pipeline}`` of the agents trained together (Algorithm 1): each agent's denoiser gets its own
    modulation embedding (one per agent: each is initialised from that agent's own text encoder
    and has that agent's conditioning width, and its norm is that agent's modulation factor),
    and one optimizer step updates every agent and embedding on the summed loss (weighted per
    ``spec.loss_weighting``, see :func:`_total_loss`). Multi-agent samples are videos: the
    text-to-image agent trains on their first frame, the image-to-video agent on the video.

    Returns the new state and the per-step (total) losses of the steps run here. ``on_step(step,
    loss, modulation_factor)`` is called after each step (the factor: the L2 norm of all the
    modulation embeddings together; 0.0 when modulation is off). ``modulation`` overrides the
    spec's initialisation on a fresh start (e.g. SVD's special token from a paired CLIP text
    tower, see :meth:`ModulationEmbedding.create`; a ``{target: embedding}`` mapping for several
    agents). The pipelines are not modified and keep their placement (offload hooks included).
    ``device``: where training runs (the profile's device, e.g. ``cuda`` while model offload
    keeps the pipeline's weights on the CPU between calls); None: the pipeline's execution device.
    ``text_tower``: loads ``(tokenizer, CLIPTextModelWithProjection)`` of the CLIP an SVD agent's
    image encoder belongs to (agents/loading.py's ``load_text_tower``); called only when a fresh
    SVD modulation starts from the special token, which needs it.
    """
    agents = _agents_of(pipe, spec)
    overrides = modulation if isinstance(modulation, dict) else \
        ({agents[0].target: modulation} if modulation is not None else {})
    per_agent = {a.target: _agent_samples(samples, a, spec) for a in agents}
    family = "+".join(a.family for a in agents)
    start_step = 0 if start is None else start.step
    if start is not None:
        _check_resume(start, spec, family)
    if until_step < start_step:
        raise MoraError(f"until_step {until_step} is before the state's step {start_step}")
    if until_step == start_step and start is not None:
        return start, []

    device = torch.device(device) if device is not None else torch.device(agents[0].pipe._execution_device)
    named: list[tuple[str, torch.nn.Parameter]] = []
    frozen_dtype = None
    for agent in agents:
        agent.denoiser = _training_copy(denoiser_of(agent.pipe), device, spec)
        own = _trainable(agent.denoiser, spec)
        frozen_dtype = frozen_dtype or _frozen_dtype(agent.denoiser)
        agent.mod = _initial_modulation(agent.pipe, spec, start, overrides.get(agent.target),
                                        agent.family, agent.prefix, text_tower)
        if agent.mod is not None:
            agent.mod = agent.mod.to(device)
            own.append((_MODULATION, agent.mod.weight))
        named += [(agent.prefix + name, p) for name, p in own]
        if spec.gradient_checkpointing:
            agent.denoiser.enable_gradient_checkpointing()
        agent.denoiser.train()
    params = [p for _, p in named]
    if start is not None:
        _load_params(named, start)

    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    if start is not None:
        _load_optimizer(optimizer, named, start)
    scheduler = _lr_scheduler(optimizer, spec, start_step)
    ema = None
    if spec.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=spec.ema_decay, update_after_step=spec.ema_start_step)
        if start is not None:
            ema.shadow_params = [start.tensors[f"ema/{name}"].to(device).clone() for name, _ in named]
            ema.optimization_step = start_step
    # A frozen base kept in bf16/fp16 (LoRA) computes in its dtype even where the spec asks for
    # no mixed precision; the trainable parameters stay fp32 (peft casts the adapters' inputs).
    amp_dtype = autocast_dtype(spec, device) or frozen_dtype
    scaler = _grad_scaler(amp_dtype, device, start)

    for agent in agents:
        agent.trainer = _TRAINERS[agent.family](agent.pipe, spec, device)
        agent.prepared = [agent.trainer.prepare(s) for s in per_agent[agent.target]]
    losses: list[float] = []
    for step in range(start_step, until_step):
        optimizer.zero_grad(set_to_none=True)
        micro_losses = []
        for micro in range(spec.grad_accumulation):
            generator = torch.Generator(device="cpu").manual_seed(_seed(spec.seed, 0, step, micro))
            indices = _batch_indices(spec, len(samples), step, micro)
            with _autocast(device, amp_dtype):
                loss = _total_loss([a.trainer.loss(a.denoiser, a.mod, [a.prepared[i] for i in indices],
                                                   generator) for a in agents],
                                   [a.mod for a in agents], spec)
            scaled = loss / spec.grad_accumulation
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            micro_losses.append(float(loss.detach()))
        if scaler is not None:
            scaler.unscale_(optimizer)
        if spec.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.step(params)
        loss_value = float(np.mean(micro_losses))
        if not np.isfinite(loss_value):
            raise MoraError(f"fine-tuning diverged at step {step + 1} (loss {loss_value})")
        losses.append(loss_value)
        if on_step is not None:
            on_step(step + 1, loss_value, _joint_factor(agents))

    state = _collect_state(until_step, named, optimizer, ema, scaler, spec, family, agents)
    return state, losses


def _total_loss(losses: list[torch.Tensor], mods: list[ModulationEmbedding | None],
                spec: FinetuneSpec) -> torch.Tensor:
    """The summed loss of one multi-agent step (one agent: its loss).

    The paper's modulation factor α_i = ‖m_i‖ "adjusts the influence of each agent" on the
    total: with ``loss_weighting: modulation_factor`` agent i's loss counts ``n·α_i/Σ_j α_j``
    (weights averaging 1, so the scale matches a plain sum). The weights are differentiable,
    so each step also moves the norms: an agent whose loss is above the weighted mean gets a
    smaller share, the direction Algorithm 1's "the modulation embedding learns to adjust its
    influence to minimize the loss" implies; the embeddings also condition their denoisers,
    so the norm is not free to run away. ``equal`` (or modulation off: no factors) is the
    plain sum, the ablation.
    """
    if len(losses) == 1:
        return losses[0]
    if spec.loss_weighting == "equal" or any(m is None for m in mods):
        return torch.stack(losses).sum()
    factors = torch.stack([m.weight.float().norm() for m in mods])
    weights = len(mods) * factors / factors.sum()
    return (weights.to(losses[0].device) * torch.stack(losses)).sum()


def loss_weights(factors: list[float], spec: FinetuneSpec) -> list[float]:
    """Each agent's share of the summed loss given its modulation factor (see :func:`_total_loss`)."""
    if len(factors) == 1 or spec.loss_weighting == "equal" or not all(factors):
        return [1.0] * len(factors)
    return [len(factors) * f / sum(factors) for f in factors]


def _joint_factor(agents: list[_Agent]) -> float:
    return float(np.sqrt(sum(a.mod.factor ** 2 for a in agents if a.mod is not None)))


def _agents_of(pipe: Any, spec: FinetuneSpec) -> list[_Agent]:
    if spec.joint:
        if not isinstance(pipe, dict) or set(pipe) != set(spec.trained):
            raise MoraError(f"training {', '.join(spec.trained)} together needs one pipeline per agent")
        pipes = pipe
    else:
        if isinstance(pipe, dict):
            raise MoraError("one agent is trained (finetune.target): pass its pipeline")
        pipes = {spec.target: pipe}
    agents = []
    for target in spec.trained:
        family = family_of(pipes[target])
        _check_spec(target, family, pipes[target])
        agents.append(_Agent(target, pipes[target], family, f"{target}/" if spec.joint else ""))
    return agents


def _agent_samples(samples: list[TrainingSample], agent: _Agent, spec: FinetuneSpec) -> list[TrainingSample]:
    """What ``agent`` trains on: the samples as given (one agent) or, several agents training on
    videos, the first frame for the text-to-image agent."""
    if spec.joint and agent.family == "sd3":
        for i, s in enumerate(samples):
            if not isinstance(s.target, np.ndarray) or s.target.ndim != 4:
                raise MoraError(f"sample {i}: agents trained together train on a T×H×W×3 video")
        samples = [dataclasses.replace(s, target=s.target[0]) for s in samples]
    _check_samples(samples, agent.family, spec)
    return samples


def inference_weights(state: TrainState, target: str | None = None) -> dict[str, torch.Tensor]:
    """What sampling loads: the EMA weights (the current ones without EMA) and the modulation.

    Keys: ``denoiser/<param>`` (full fine-tuning), ``lora/<module>.lora_{A,B}.default.weight``
    (LoRA, scale 1), ``modulation`` (K×D; absent when modulation is off). A state of several
    agents trained together holds each agent's weights: ``target`` names the one wanted.
    """
    source = "ema/" if state.meta.get("ema") == "true" else "param/"
    if state.meta.get("joint") == "true":
        if target not in agent_targets(state):
            raise MoraError(f"this state trained {', '.join(agent_targets(state))}: name one of them")
        source += f"{target}/"
    elif target is not None and target != state.meta.get("target"):
        raise MoraError(f"this state trained {state.meta.get('target')}, not {target}")
    method = state.meta.get("method", "full")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.tensors.items():
        if not key.startswith(source):
            continue
        name = key[len(source):]
        if name == _MODULATION:
            out[_MODULATION] = tensor.clone()
        elif method == "lora":
            out[f"lora/{name}"] = tensor.clone()
        else:
            out[f"denoiser/{name}"] = tensor.clone()
    return out


def apply_weights(pipe: Any, weights: dict[str, torch.Tensor]) -> None:
    """Load fine-tuned ``weights`` into ``pipe`` in place and install the modulation hook.

    Use a pipeline the caller owns (not the shared cache). Full weights replace the denoiser's
    parameters (idempotent); LoRA deltas ``B·A`` are merged into the base weights, so a
    pipeline takes LoRA weights once (a second merge is refused).
    """
    family = family_of(pipe)
    denoiser = denoiser_of(pipe)
    unknown = [k for k in weights if not (k == _MODULATION or k.startswith(("denoiser/", "lora/")))]
    if unknown:
        raise MoraError(f"not fine-tuning weights: unexpected key {unknown[0]!r}")
    full = {k[len("denoiser/"):]: v for k, v in weights.items() if k.startswith("denoiser/")}
    lora = {k[len("lora/"):]: v for k, v in weights.items() if k.startswith("lora/")}
    with torch.no_grad():
        if full:
            names = {n for n, _ in denoiser.named_parameters()}
            if set(full) != names:
                extra = sorted(set(full) - names) or sorted(names - set(full))
                raise MoraError(f"fine-tuned weights do not fit {type(denoiser).__name__} (e.g. {extra[0]!r})")
            denoiser.load_state_dict(full, strict=False)
        if lora:
            if getattr(denoiser, "_mora_lora_merged", False):
                raise MoraError("this pipeline already has fine-tuned LoRA weights merged: load a fresh one")
            _merge_lora(denoiser, lora)
            denoiser._mora_lora_merged = True
    if _MODULATION in weights:
        mod = ModulationEmbedding(weights[_MODULATION], layout=layout_of(family))
        install(denoiser, mod.to(_device_of(denoiser)).requires_grad_(False))
    else:
        uninstall(denoiser)


def save_state(state: TrainState, path: str | os.PathLike) -> None:
    """Write the state to a safetensors file, tensor by tensor (never the whole file in memory);
    step and metadata go into the safetensors header."""
    from safetensors.torch import save_file

    meta = {**state.meta, "format": STATE_FORMAT, "step": str(int(state.step))}
    save_file(_contiguous(state.tensors), os.fspath(path), metadata=meta)


def load_state(path: str | os.PathLike) -> TrainState:
    """Inverse of :func:`save_state`, read tensor by tensor (safetensors only: nothing is unpickled)."""
    meta, tensors = _read_safetensors(path, STATE_FORMAT, "not a Mora fine-tuning state")
    step = int(meta.pop("step"))
    return TrainState(step=step, tensors=tensors, meta=meta)


def save_weights(weights: dict[str, torch.Tensor], path: str | os.PathLike,
                 meta: dict[str, str] | None = None) -> None:
    """Inference weights (:func:`inference_weights`) to a safetensors file, tensor by tensor."""
    from safetensors.torch import save_file

    save_file(_contiguous(weights), os.fspath(path), metadata={**(meta or {}), "format": WEIGHTS_FORMAT})


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Inverse of :func:`save_weights`."""
    return _read_safetensors(path, WEIGHTS_FORMAT, "not a Mora fine-tuned weights file")[1]


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _read_safetensors(path, fmt: str, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            if meta.pop("format", None) != fmt:
                raise MoraError(f"{what} (safetensors metadata 'format' is missing or different)")
            return meta, {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError:
        raise MoraError(f"{what}: not a safetensors file") from None


def state_to_bytes(state: TrainState) -> bytes:
    """The state as safetensors bytes; step and metadata go into the safetensors header."""
    from safetensors.torch import save

    meta = {**state.meta, "format": STATE_FORMAT, "step": str(int(state.step))}
    return save({k: v.detach().cpu().contiguous().clone() for k, v in state.tensors.items()}, metadata=meta)


def state_from_bytes(data: bytes) -> TrainState:
    """Inverse of :func:`state_to_bytes` (safetensors only: nothing is unpickled)."""
    from safetensors.torch import load

    meta = _safetensors_metadata(data)
    if meta.get("format") != STATE_FORMAT:
        raise MoraError("not a Mora fine-tuning state (safetensors metadata 'format' is missing or different)")
    step = int(meta.pop("step"))
    meta.pop("format")
    return TrainState(step=step, tensors=load(data), meta=meta)


def weights_to_bytes(weights: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> bytes:
    """Inference weights as safetensors bytes."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in weights.items()},
                metadata={**(meta or {}), "format": WEIGHTS_FORMAT})


def weights_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    if _safetensors_metadata(data).get("format") != WEIGHTS_FORMAT:
        raise MoraError("not a Mora fine-tuned weights file (safetensors metadata 'format' is missing or different)")
    return load(data)


def autocast_dtype(spec: FinetuneSpec, device: torch.device) -> torch.dtype | None:
    """The autocast dtype training uses on ``device`` (None: fp32). See configs.finetune."""
    if spec.mixed_precision == "no":
        return None
    if device.type == "cuda":
        if spec.mixed_precision == "fp16":
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and spec.mixed_precision == "bf16" and spec.mixed_precision_on_cpu:
        return torch.bfloat16
    return None


# ------------------------------------------------------------------------------------------
# Checks


def _check_spec(target: str, family: str, pipe: Any) -> None:
    if _TARGETS[family] != target:
        raise MoraError(f"a {type(pipe).__name__} is a {_TARGETS[family].replace('_', '-')} model, "
                        f"not a {target.replace('_', '-')} one")
    if family == "wan":
        if getattr(pipe, "transformer_2", None) is not None or getattr(pipe.config, "expand_timesteps", False):
            raise MoraError("fine-tuning supports Wan 2.1 image-to-video models (one transformer), "
                            "not two-expert or TI2V Wan 2.2 ones")
        if getattr(pipe, "image_encoder", None) is None or pipe.transformer.config.image_dim is None:
            raise MoraError("Wan fine-tuning needs an image-to-video model with its CLIP image encoder")


def _check_samples(samples: list[TrainingSample], family: str, spec: FinetuneSpec) -> None:
    if not samples:
        raise MoraError("fine-tuning needs at least one sample")
    video = family != "sd3"
    shape = None
    for i, s in enumerate(samples):
        target = s.target
        if not isinstance(target, np.ndarray) or target.dtype != np.uint8:
            raise MoraError(f"sample {i}: target must be a uint8 numpy array")
        if target.ndim != (4 if video else 3) or target.shape[-1] != 3:
            want = "T×H×W×3 video" if video else "H×W×3 image"
            raise MoraError(f"sample {i}: target must be a {want}, got shape {target.shape}")
        if shape is not None and target.shape != shape:
            raise MoraError(f"sample {i}: target shape {target.shape} differs from {shape} (one size per run)")
        shape = target.shape
        if video and not isinstance(s.first_frame, Image.Image):
            raise MoraError(f"sample {i}: first_frame must be a PIL image")
        if family != "svd" and not (isinstance(s.prompt, str) and s.prompt.strip()):
            raise MoraError(f"sample {i}: empty prompt")
    height, width = shape[-3], shape[-2]
    multiple = 8 if family == "svd" else 16
    if height % multiple or width % multiple:
        raise MoraError(f"{family} trains on sizes that are multiples of {multiple}, got {width}x{height}")
    if family == "wan" and shape[0] % 4 != 1:
        raise MoraError(f"Wan trains on 4k+1 frames, got {shape[0]}")


def _check_resume(start: TrainState, spec: FinetuneSpec, family: str) -> None:
    want = _meta_identity(spec, family)
    for key, value in want.items():
        if start.meta.get(key) != value:
            raise MoraError(f"cannot resume: the state was trained with {key}={start.meta.get(key)!r}, "
                            f"this run has {key}={value!r}")


def _meta_identity(spec: FinetuneSpec, family: str) -> dict[str, str]:
    return {
        "family": family,
        "method": spec.method,
        "lora_rank": str(spec.lora_rank) if spec.method == "lora" else "-",
        "modulation": spec.modulation,
        "modulation_tokens": str(spec.modulation_tokens) if spec.modulation != "off" else "-",
        "seed": str(spec.seed),
        "ema": "true" if spec.ema else "false",
    }


# ------------------------------------------------------------------------------------------
# Set-up


def _device_of(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _training_copy(base: torch.nn.Module, device: torch.device, spec: FinetuneSpec) -> torch.nn.Module:
    """The denoiser training runs on: a new module of ``base``'s class and config on ``device``,
    every parameter frozen, without the pipeline's accelerate offload hooks or modulation hook.

    Full fine-tuning gets fp32 copies of the weights (one tensor at a time: no second fp32 model
    in memory). LoRA leaves the frozen weights in the dtype they were loaded in (the profile's;
    modules a model keeps in fp32 stay so) and copies them only to move them to ``device``: on
    the same device they are the pipeline's own tensors, which frozen training never writes.
    Under sequential offload the pipeline's parameters are placeholders on the ``meta`` device;
    accelerate gathers their values from the hooks' weight maps.
    """
    from accelerate import init_empty_weights

    if any(p.device.type == "meta" for p in base.parameters()):
        from accelerate.utils.modeling import get_state_dict_offloaded_model

        weights = get_state_dict_offloaded_model(base)
    else:
        weights = base.state_dict()
    full = spec.method == "full"
    with init_empty_weights():
        denoiser = type(base).from_config(base.config)
    for name in list(weights):
        tensor = weights.pop(name)
        if full:
            dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
            weights[name] = tensor.to(device, dtype, copy=True)
        else:
            weights[name] = tensor.to(device)
    denoiser.load_state_dict(weights, strict=True, assign=True)
    del weights
    denoiser.to(device)  # buffers outside the state dict (non-persistent ones)
    denoiser.requires_grad_(False)
    return denoiser


def _frozen_dtype(denoiser: torch.nn.Module) -> torch.dtype | None:
    """The reduced precision of the denoiser's frozen weights (LoRA on a bf16/fp16 base), or None."""
    dtypes = {p.dtype for p in denoiser.parameters() if not p.requires_grad and p.is_floating_point()}
    for dtype in (torch.bfloat16, torch.float16):
        if dtype in dtypes:
            return dtype
    return None


def _trainable(denoiser: torch.nn.Module, spec: FinetuneSpec) -> list[tuple[str, torch.nn.Parameter]]:
    if spec.method == "full":
        denoiser.requires_grad_(True)
        return list(denoiser.named_parameters())
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_rank, lora_dropout=0.0,
                        init_lora_weights="gaussian", target_modules=list(LORA_TARGETS))
    inject_adapter_in_model(config, denoiser)
    named = [(n, p) for n, p in denoiser.named_parameters() if ".lora_" in n]
    if not named:
        raise MoraError(f"no LoRA target ({', '.join(LORA_TARGETS)}) in {type(denoiser).__name__}")
    # peft gives the adapters the base layer's dtype; they train in fp32 over a bf16/fp16 base.
    from diffusers.training_utils import cast_training_params

    for _, p in named:
        p.requires_grad_(True)
    cast_training_params(denoiser, dtype=torch.float32)
    named = [(n, p) for n, p in denoiser.named_parameters() if ".lora_" in n]
    # Re-draw peft's gaussian init (A ~ N(0, 1/r), B = 0) from a CPU generator: same on any device.
    generator = torch.Generator(device="cpu").manual_seed(_seed(spec.seed, 2))
    with torch.no_grad():
        for name, p in named:
            p.requires_grad_(True)
            if ".lora_A." in name:
                p.copy_(torch.randn(p.shape, generator=generator) / spec.lora_rank)
            else:
                p.zero_()
    return named


def _initial_modulation(pipe, spec, start, override, family, prefix="",
                        text_tower=None) -> ModulationEmbedding | None:
    if start is not None:
        tensor = start.tensors.get(f"param/{prefix}{_MODULATION}")
        if tensor is None:
            return None
        return ModulationEmbedding(tensor, layout=layout_of(family), mode=spec.modulation)
    if spec.modulation == "off":
        return None
    if override is not None:
        mod = copy.deepcopy(override)
        mod.weight.data = mod.weight.data.float()
        if mod.weight.shape[0] != spec.modulation_tokens:
            raise MoraError(f"the given modulation has {mod.weight.shape[0]} tokens, the spec {spec.modulation_tokens}")
        return mod
    clip_text = None
    if family == "svd" and spec.modulation == "special_token" and text_tower is not None:
        clip_text = text_tower()
    return ModulationEmbedding.create(pipe, spec.modulation, spec.modulation_tokens, spec.special_token,
                                      spec.seed, clip_text=clip_text)


def _load_params(named, start: TrainState) -> None:
    with torch.no_grad():
        for name, p in named:
            tensor = start.tensors.get(f"param/{name}")
            if tensor is None or tensor.shape != p.shape:
                raise MoraError(f"cannot resume: the state has no matching weight {name!r}")
            p.copy_(tensor)


def _load_optimizer(optimizer: torch.optim.Optimizer, named, start: TrainState) -> None:
    for name, p in named:
        keys = {k: f"adam/{name}/{k}" for k in ("exp_avg", "exp_avg_sq", "step")}
        if all(key in start.tensors for key in keys.values()):
            optimizer.state[p] = {
                "step": start.tensors[keys["step"]].clone(),
                "exp_avg": start.tensors[keys["exp_avg"]].to(p.device).clone(),
                "exp_avg_sq": start.tensors[keys["exp_avg_sq"]].to(p.device).clone(),
            }


def _lr_scheduler(optimizer, spec: FinetuneSpec, start_step: int):
    from diffusers.optimization import get_scheduler

    scheduler = get_scheduler(spec.lr_scheduler, optimizer, num_warmup_steps=spec.warmup_steps,
                              num_training_steps=spec.max_steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": a replay
        for _ in range(start_step):
            scheduler.step()
    return scheduler


def _grad_scaler(amp_dtype, device, start: TrainState | None):
    if amp_dtype != torch.float16:
        return None
    scaler = torch.amp.GradScaler(device.type)
    if start is not None and "amp/scale" in start.tensors:
        scaler.load_state_dict({
            "scale": float(start.tensors["amp/scale"]),
            "growth_tracker": int(start.tensors["amp/growth_tracker"]),
            "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
        })
    return scaler


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0])


def _batch_indices(spec: FinetuneSpec, n: int, step: int, micro: int) -> list[int]:
    """Sample indices of one micro-batch: epoch-wise seeded permutations, a function of the step."""
    first = (step * spec.grad_accumulation + micro) * spec.batch_size
    out = []
    for i in range(first, first + spec.batch_size):
        epoch, pos = divmod(i, n)
        order = torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(_seed(spec.seed, 1, epoch)))
        out.append(int(order[pos]))
    return out


def _collect_state(step, named, optimizer, ema, scaler, spec, family, agents) -> TrainState:
    tensors: dict[str, torch.Tensor] = {}
    for i, (name, p) in enumerate(named):
        # No clones: the training copy, the optimizer and the EMA end with this call.
        tensors[f"param/{name}"] = p.detach().cpu()
        state = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in state:
                tensors[f"adam/{name}/{key}"] = torch.as_tensor(state[key]).detach().cpu()
        if ema is not None:
            tensors[f"ema/{name}"] = ema.shadow_params[i].detach().cpu()
    if scaler is not None:
        tensors["amp/scale"] = torch.tensor(float(scaler.get_scale()))
        tensors["amp/growth_tracker"] = torch.tensor(int(scaler.state_dict().get("_growth_tracker", 0)))
    factors = [a.mod.factor if a.mod is not None else 0.0 for a in agents]
    meta = {
        **_meta_identity(spec, family),
        "pipeline": ",".join(type(a.pipe).__name__ for a in agents),
        "target": ",".join(a.target for a in agents),
        "modulation_factor": f"{_joint_factor(agents):.6g}",
        "spec": json.dumps(spec.model_dump(mode="json"), sort_keys=True),
    }
    if spec.joint:
        meta["joint"] = "true"
        meta["modulation_factors"] = json.dumps(dict(zip(spec.trained, factors)))
        meta["loss_weights"] = json.dumps(dict(zip(spec.trained, loss_weights(factors, spec))))
    return TrainState(step=step, tensors=tensors, meta=meta)


def agent_targets(state: TrainState) -> list[str]:
    """The agents a state (or its weights) trained: one, or several trained together."""
    return state.meta.get("target", "").split(",")


def _merge_lora(denoiser: torch.nn.Module, lora: dict[str, torch.Tensor]) -> None:
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in lora.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                modules.setdefault(key.split(marker)[0], {})[part] = tensor
    for path, pair in modules.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise MoraError(f"LoRA weights for {path!r} are incomplete")
        try:
            layer = denoiser.get_submodule(path)
        except AttributeError:
            raise MoraError(f"LoRA weights name a module {path!r} that {type(denoiser).__name__} lacks") from None
        delta = pair["lora_B"].float() @ pair["lora_A"].float()  # lora_alpha = r: scale 1
        if delta.shape != layer.weight.shape:
            raise MoraError(f"LoRA weights for {path!r} do not fit its shape")
        layer.weight.add_(delta.to(layer.weight.device, layer.weight.dtype))


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors buffer (8-byte little-endian header size + JSON)."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(bytes(data[8:8 + size]))
    except (ValueError, TypeError):
        raise MoraError("not a safetensors buffer") from None
    return dict(header.get("__metadata__") or {})


# ------------------------------------------------------------------------------------------
# Families: conditioning (as the pipeline builds it at inference) and the loss


def _pixels(array: np.ndarray) -> torch.Tensor:
    """uint8 ...×H×W×3 -> float ...×3×H×W in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float() / 127.5 - 1.0
    return tensor.movedim(-1, -3)


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
        image = _pixels(sample.target)[None].to(self.device, pipe.vae.dtype)
        latents = pipe.vae.encode(image).latent_dist.mode()
        latents = (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
        return {"x0": latents.float(), "text": text.float(), "pooled": pooled.float()}

    def loss(self, denoiser, mod, batch, generator) -> torch.Tensor:
        x0 = torch.cat([b["x0"] for b in batch])
        text = torch.cat([b["text"] for b in batch])
        pooled = torch.cat([b["pooled"] for b in batch])
        if mod is not None:
            text = mod.append(text)

        def predict(noisy, timesteps):
            return denoiser(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=text,
                            pooled_projections=pooled, return_dict=False)[0]

        return self.flow_loss(x0, generator, predict)


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
        video = _pixels(sample.target).movedim(0, 1)[None].to(self.device, pipe.vae.dtype)  # 1×3×T×H×W
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
        x0 = torch.cat([b["x0"] for b in batch])
        text = torch.cat([b["text"] for b in batch])
        image = torch.cat([b["image"] for b in batch])
        condition = torch.cat([b["condition"] for b in batch])
        if mod is not None:
            text = mod.append(text)

        def predict(noisy, timesteps):
            return denoiser(hidden_states=torch.cat([noisy, condition], dim=1), timestep=timesteps,
                            encoder_hidden_states=text, encoder_hidden_states_image=image,
                            return_dict=False)[0]

        return self.flow_loss(x0, generator, predict)


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
        pixels = _pixels(sample.target).to(self.device, vae.dtype)  # T×3×H×W
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


_TRAINERS = {"sd3": _SD3Trainer, "wan": _WanTrainer, "svd": _SVDTrainer}
