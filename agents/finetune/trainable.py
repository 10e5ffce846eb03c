"""What a fine-tuning run optimises and how: the training copy of the denoiser, LoRA adapters,
the AdamW state and LR schedule replayed on resume, and mixed precision."""

from __future__ import annotations

import contextlib
import warnings

import torch

from agents.finetune.checkpoints import TrainState
from agents.finetune.data import seed_of
from configs.errors import MoraError
from configs.finetune import FinetuneSpec

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")



def training_copy(base: torch.nn.Module, device: torch.device, spec: FinetuneSpec) -> torch.nn.Module:
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


def frozen_weights_dtype(denoiser: torch.nn.Module) -> torch.dtype | None:
    """The reduced precision of the denoiser's frozen weights (LoRA on a bf16/fp16 base), or None."""
    dtypes = {p.dtype for p in denoiser.parameters() if not p.requires_grad and p.is_floating_point()}
    for dtype in (torch.bfloat16, torch.float16):
        if dtype in dtypes:
            return dtype
    return None


def trainable_parameters(denoiser: torch.nn.Module, spec: FinetuneSpec) -> list[tuple[str, torch.nn.Parameter]]:
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
    generator = torch.Generator(device="cpu").manual_seed(seed_of(spec.seed, 2))
    with torch.no_grad():
        for name, p in named:
            p.requires_grad_(True)
            if ".lora_A." in name:
                p.copy_(torch.randn(p.shape, generator=generator) / spec.lora_rank)
            else:
                p.zero_()
    return named


def load_params(named, start: TrainState) -> None:
    with torch.no_grad():
        for name, p in named:
            tensor = start.tensors.get(f"param/{name}")
            if tensor is None or tensor.shape != p.shape:
                raise MoraError(f"cannot resume: the state has no matching weight {name!r}")
            p.copy_(tensor)


def load_optimizer(optimizer: torch.optim.Optimizer, named, start: TrainState) -> None:
    for name, p in named:
        keys = {k: f"adam/{name}/{k}" for k in ("exp_avg", "exp_avg_sq", "step")}
        if all(key in start.tensors for key in keys.values()):
            optimizer.state[p] = {
                "step": start.tensors[keys["step"]].clone(),
                "exp_avg": start.tensors[keys["exp_avg"]].to(p.device).clone(),
                "exp_avg_sq": start.tensors[keys["exp_avg_sq"]].to(p.device).clone(),
            }


def make_lr_scheduler(optimizer, spec: FinetuneSpec, start_step: int):
    from diffusers.optimization import get_scheduler

    scheduler = get_scheduler(spec.lr_scheduler, optimizer, num_warmup_steps=spec.warmup_steps,
                              num_training_steps=spec.max_steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": a replay
        for _ in range(start_step):
            scheduler.step()
    return scheduler


def make_grad_scaler(amp_dtype, device, start: TrainState | None):
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


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
