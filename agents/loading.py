"""Turn a profile's pipeline spec into a loaded diffusers pipeline (tiny or real, same code)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.cache import MODEL_CACHE, ModelCache
from configs.schema import PipelineSpec, Profile
from mora.errors import MoraError

if TYPE_CHECKING:
    import torch

TINY_PREFIX = "tiny:"


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision the agents of one profile run."""

    device: str
    dtype: str

    @classmethod
    def for_profile(cls, profile: Profile) -> "Runtime":
        import torch

        device = profile.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if profile.threads is not None and torch.get_num_threads() != profile.threads:
            torch.set_num_threads(profile.threads)  # process-wide: one profile per worker
        dtype = profile.dtype
        if device == "cpu" and dtype == "float16":
            dtype = "float32"  # half-precision kernels are missing or very slow on CPU
        return cls(device=device, dtype=dtype)

    @property
    def torch_dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, self.dtype)


def resolve_weights(model: str) -> str:
    """A local folder for ``tiny:<name>`` (built on demand) and local paths; hub ids pass through."""
    if model.startswith(TINY_PREFIX):
        from agents.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model[len(TINY_PREFIX):]))
    path = Path(model).expanduser()
    if model.startswith((".", "/", "~")) and not path.is_dir():
        raise MoraError(f"model folder '{model}' does not exist")
    return str(path) if path.is_dir() else model


def load_pipeline(spec: PipelineSpec, runtime: Runtime, cache: ModelCache = MODEL_CACHE) -> Any:
    """Load (once per process) the diffusers pipeline ``spec`` names, placed per ``runtime``."""
    weights = resolve_weights(spec.model)
    key = (spec.pipeline, weights, spec.revision, spec.variant, runtime.device, runtime.dtype,
           spec.offload)
    return cache.get(key, lambda: _from_pretrained(spec, weights, runtime))


def _from_pretrained(spec: PipelineSpec, weights: str, runtime: Runtime) -> Any:
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # the torchvision fallback notice is expected
    pipeline_cls = getattr(diffusers, spec.pipeline, None)
    if pipeline_cls is None or not hasattr(pipeline_cls, "from_pretrained"):
        raise MoraError(f"'{spec.pipeline}' is not a diffusers pipeline class")
    try:
        pipe = pipeline_cls.from_pretrained(
            weights,
            revision=spec.revision,
            variant=spec.variant,
            dtype=runtime.torch_dtype,
            use_safetensors=True,  # never unpickle weights
        )
    except (OSError, ValueError, EnvironmentError) as exc:
        raise _not_available(spec, weights, exc) from None
    pipe.set_progress_bar_config(disable=True)
    if spec.offload == "model" and runtime.device != "cpu":
        pipe.enable_model_cpu_offload(device=runtime.device)
    elif spec.offload == "sequential" and runtime.device != "cpu":
        pipe.enable_sequential_cpu_offload(device=runtime.device)
    else:
        pipe.to(runtime.device)
    if spec.vae_slicing and hasattr(pipe.vae, "enable_slicing"):
        pipe.vae.enable_slicing()
    if spec.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    if spec.attention_slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()
    return pipe


def _not_available(spec: PipelineSpec, weights: str, exc: Exception) -> MoraError:
    if Path(weights).is_dir():
        return MoraError(f"cannot load {spec.pipeline} from '{weights}': {str(exc).splitlines()[0]}")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    how = (f"fetch it on a connected machine with `huggingface-cli download {weights}` "
           "(then copy the HF cache here) or point the profile's model at a local folder")
    state = "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if offline else \
        "could not be loaded (no local copy and the hub is unreachable?)"
    return MoraError(f"model '{weights}' {state}; {how}")
