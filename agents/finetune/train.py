"""The training loop: one or several agents (Algorithm 1) stepped together on their summed loss.

See agents/finetune/__init__.py for what a run keeps and returns; the pieces it uses live beside
this file: data.py (samples, batches), losses.py (each family's loss), trainable.py (the
training copy, LoRA, optimizer, precision), checkpoints.py (the state and the weights).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from agents.finetune.checkpoints import MODULATION_KEY, TrainState
from agents.finetune.data import TrainingSample, batch_indices, check_samples, seed_of
from agents.finetune.losses import TRAINERS
from agents.finetune.trainable import (
    autocast_context,
    autocast_dtype,
    frozen_weights_dtype,
    load_optimizer,
    load_params,
    make_grad_scaler,
    make_lr_scheduler,
    trainable_parameters,
    training_copy,
)
from agents.modulation import ModulationEmbedding, denoiser_of, family_of, layout_of
from configs.errors import MoraError
from configs.finetune import FinetuneSpec

_TARGETS = {"sd3": "text_to_image", "wan": "image_to_video", "svd": "image_to_video"}



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
    ``spec.loss_weighting``, see :func:`total_loss`). Multi-agent samples are videos: the
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
        agent.denoiser = training_copy(denoiser_of(agent.pipe), device, spec)
        own = trainable_parameters(agent.denoiser, spec)
        frozen_dtype = frozen_dtype or frozen_weights_dtype(agent.denoiser)
        agent.mod = _initial_modulation(agent.pipe, spec, start, overrides.get(agent.target),
                                        agent.family, agent.prefix, text_tower)
        if agent.mod is not None:
            agent.mod = agent.mod.to(device)
            own.append((MODULATION_KEY, agent.mod.weight))
        named += [(agent.prefix + name, p) for name, p in own]
        if spec.gradient_checkpointing:
            agent.denoiser.enable_gradient_checkpointing()
        agent.denoiser.train()
    params = [p for _, p in named]
    if start is not None:
        load_params(named, start)

    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    if start is not None:
        load_optimizer(optimizer, named, start)
    scheduler = make_lr_scheduler(optimizer, spec, start_step)
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
    scaler = make_grad_scaler(amp_dtype, device, start)

    for agent in agents:
        agent.trainer = TRAINERS[agent.family](agent.pipe, spec, device)
        agent.prepared = [agent.trainer.prepare(s) for s in per_agent[agent.target]]
    losses: list[float] = []
    for step in range(start_step, until_step):
        optimizer.zero_grad(set_to_none=True)
        micro_losses = []
        for micro in range(spec.grad_accumulation):
            generator = torch.Generator(device="cpu").manual_seed(seed_of(spec.seed, 0, step, micro))
            indices = batch_indices(spec, len(samples), step, micro)
            with autocast_context(device, amp_dtype):
                loss = total_loss([a.trainer.loss(a.denoiser, a.mod, [a.prepared[i] for i in indices],
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


def total_loss(losses: list[torch.Tensor], mods: list[ModulationEmbedding | None],
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
    """Each agent's share of the summed loss given its modulation factor (see :func:`total_loss`)."""
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
    check_samples(samples, agent.family, spec)
    return samples


def _initial_modulation(pipe, spec, start, override, family, prefix="",
                        text_tower=None) -> ModulationEmbedding | None:
    if start is not None:
        tensor = start.tensors.get(f"param/{prefix}{MODULATION_KEY}")
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
