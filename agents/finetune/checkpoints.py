"""Fine-tuning states and the weights sampling loads: safetensors in and out, and into a pipeline.

A :class:`TrainState` holds everything to resume exactly; :func:`inference_weights` takes what
sampling needs from it (the EMA weights and the modulation), :func:`apply_weights` loads those
into a pipeline the caller owns. Files stream tensor by tensor (:func:`save_state`,
:func:`load_state`); nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from agents.modulation import (
    ModulationEmbedding,
    denoiser_of,
    device_of,
    family_of,
    install,
    layout_of,
    uninstall,
)
from configs.errors import MoraError

STATE_FORMAT = "mora-finetune-state/1"
WEIGHTS_FORMAT = "mora-finetune-weights/1"

MODULATION_KEY = "modulation"  # the modulation embedding's tensor name in states and weights


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


def agent_targets(state: TrainState) -> list[str]:
    """The agents a state (or its weights) trained: one, or several trained together."""
    return state.meta.get("target", "").split(",")


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
        if name == MODULATION_KEY:
            out[MODULATION_KEY] = tensor.clone()
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
    unknown = [k for k in weights if not (k == MODULATION_KEY or k.startswith(("denoiser/", "lora/")))]
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
    if MODULATION_KEY in weights:
        mod = ModulationEmbedding(weights[MODULATION_KEY], layout=layout_of(family))
        install(denoiser, mod.to(device_of(denoiser)).requires_grad_(False))
    else:
        uninstall(denoiser)


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


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors buffer (8-byte little-endian header size + JSON)."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(bytes(data[8:8 + size]))
    except (ValueError, TypeError):
        raise MoraError("not a safetensors buffer") from None
    return dict(header.get("__metadata__") or {})
