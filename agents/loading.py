"""Turn a profile's pipeline spec into a loaded diffusers pipeline (tiny or real, same code)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.cache import MODEL_CACHE, ModelCache
from agents.identity import SHAPES_PREFIX, TINY_PREFIX, model_identity
from configs.schema import PipelineSpec, Profile, TextTowerSpec
from configs.errors import MoraError

if TYPE_CHECKING:
    import torch

ALLOW_PICKLE_ENV = "MORA_ALLOW_PICKLE"  # "1": also load .bin/.pt/.ckpt weights (they unpickle)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFE_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision the agents of one profile run."""

    device: str
    dtype: str

    @classmethod
    def for_profile(cls, profile: Profile) -> "Runtime":
        import torch

        if profile.threads is not None and torch.get_num_threads() != profile.threads:
            torch.set_num_threads(profile.threads)  # process-wide: one profile per worker
        return cls.of(profile.device, profile.dtype)

    @classmethod
    def of(cls, device: str, dtype: str) -> "Runtime":
        """``auto`` resolved to ``cuda`` where there is one, float16 on a CPU made float32."""
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and dtype == "float16":
            dtype = "float32"  # half-precision kernels are missing or very slow on CPU
        return cls(device=device, dtype=dtype)

    @property
    def torch_dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, self.dtype)


def resolve_weights(model: str) -> str:
    """A local folder for ``tiny:<name>`` (built on demand), ``shapes:<name>`` (the trained
    folders of this checkout) and local paths; hub ids pass through."""
    if model.startswith(TINY_PREFIX):
        from agents.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model[len(TINY_PREFIX):]))
    if model.startswith(SHAPES_PREFIX):
        from agents.shapes import shapes_model_dir

        return str(shapes_model_dir(model[len(SHAPES_PREFIX):]))
    path = Path(model).expanduser()
    if model.startswith((".", "/", "~")) and not path.is_dir():
        raise MoraError(f"model folder '{model}' does not exist")
    return str(path) if path.is_dir() else model


def pickle_allowed() -> bool:
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in {"1", "true", "yes"}


def pickle_only_weights(folder: Path) -> list[str]:
    """Files in ``folder`` (and its component subfolders) with pickle weights and no
    safetensors beside them: what loading this model would unpickle."""
    found = []
    for part in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        names = [f.name for f in part.iterdir() if f.is_file()]
        if any(n.endswith(SAFE_SUFFIX) for n in names):
            continue
        found += [str((part / n).relative_to(folder)) for n in sorted(names)
                  if n.endswith(PICKLE_SUFFIXES)]
    return found


def check_safe_weights(model: str, folder: str | Path, what: str = "model") -> None:
    """Refuse a local model folder whose weights are pickles, unless MORA_ALLOW_PICKLE=1."""
    folder = Path(folder)
    if not folder.is_dir() or pickle_allowed():
        return
    pickles = pickle_only_weights(folder)
    if pickles:
        raise MoraError(f"{what} '{model}' has only pickle weights ({', '.join(pickles[:3])}"
                        f"{', …' if len(pickles) > 3 else ''}); convert them to safetensors or "
                        f"set {ALLOW_PICKLE_ENV}=1 to allow loading them")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


def cached_snapshot(model: str, revision: str | None, index: str) -> Path | None:
    """The local HF cache folder of hub model ``model`` (the one holding ``index``), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, index, revision=revision)
    return Path(found).parent if isinstance(found, str) else None


def check_weights_present(spec: PipelineSpec) -> None:
    """Before any work: a local folder must exist and hold safetensors weights; offline, a hub
    model must be in the HF cache. Tiny models are built on demand; online, hub models download
    when loaded."""
    if spec.model.startswith(TINY_PREFIX):
        return
    weights = resolve_weights(spec.model)
    if Path(weights).is_dir():
        check_safe_weights(spec.model, weights)
        return
    snapshot = cached_snapshot(weights, spec.revision, "model_index.json")
    if snapshot is not None:
        check_safe_weights(spec.model, snapshot)
    elif hub_offline():
        raise _missing_offline(weights)


def load_pipeline(spec: PipelineSpec, runtime: Runtime, cache: ModelCache = MODEL_CACHE) -> Any:
    """The diffusers pipeline ``spec`` names, placed per ``runtime``: its model is loaded once
    per process, and every pipeline class asked of the same model (SD3 text-to-image and
    img2img, Wan image-to-video and first-last-frame, …) shares the loaded components."""
    weights = resolve_weights(spec.model)
    key = model_key(spec, weights, runtime)
    family = cache.get(key, lambda: PipelineFamily(_from_pretrained(spec, weights, runtime)))
    return family.pipeline(spec.pipeline,
                           lambda base: _shared(base, spec, weights, runtime, cache))


def model_key(spec: PipelineSpec, weights: str, runtime: Runtime) -> tuple:
    """What makes two loads of a model the same. The placement options are part of it: they
    change the shared modules (hooks, VAE tiling, attention processors); so is the weights'
    identity (agents/identity.py): a model retrained at the same path is loaded anew, also by a
    long-lived ``mora worker``."""
    return ("pipelines", weights, model_identity(spec.model, spec.revision), spec.revision,
            spec.variant, runtime.device, runtime.dtype, spec.offload, spec.vae_slicing,
            spec.vae_tiling, spec.attention_slicing, spec.without)


class PipelineFamily:
    """One loaded model (the cache entry): the pipeline it was loaded as, and the other pipeline
    classes built on the same component objects (``from_pipe``), each with its own scheduler."""

    def __init__(self, base: Any):
        self.base = base
        self.pipelines: dict[str, Any] = {type(base).__name__: base}
        self._lock = threading.Lock()

    @property
    def components(self) -> dict[str, Any]:
        """Every component of every pipeline (shared ones once per pipeline; sizes dedupe)."""
        return {f"{cls}.{name}": part for cls, pipe in self.pipelines.items()
                for name, part in pipe.components.items()}

    def pipeline(self, name: str, build: Callable[[Any], Any]) -> Any:
        with self._lock:
            if name not in self.pipelines:
                self.pipelines[name] = build(self.base)
            return self.pipelines[name]


def pipeline_class(name: str) -> type:
    import diffusers

    pipeline_cls = getattr(diffusers, name, None)
    if pipeline_cls is None or not hasattr(pipeline_cls, "from_pretrained"):
        raise MoraError(f"'{name}' is not a diffusers pipeline class")
    return pipeline_cls


def rebuild(pipeline_cls: type, pipe: Any, **components: Any) -> Any:
    """``pipeline_cls`` on ``pipe``'s component objects (``components`` replace some of them):
    diffusers' ``from_pipe`` without its closing ``.to(dtype)``, which would cast the modules a
    model keeps in float32 (Wan's norms and time embedder) in the shared originals too."""
    expected, optional = pipeline_cls._get_signature_keys(pipeline_cls)
    parts = {k: v for k, v in pipe.components.items() if k in expected}
    parts.update(components)
    options = {k: pipe.config[k] for k in optional if k in pipe.config}
    new = pipeline_cls(**parts, **options)
    new.register_to_config(_name_or_path=pipe.config.get("_name_or_path"))
    new.set_progress_bar_config(disable=True)
    return new


def _shared(base: Any, spec: PipelineSpec, weights: str, runtime: Runtime, cache: ModelCache) -> Any:
    """``spec.pipeline`` on ``base``'s components; only components ``base`` lacks are loaded."""
    pipeline_cls = pipeline_class(spec.pipeline)
    expected, _ = pipeline_cls._get_signature_keys(pipeline_cls)
    scheduler = type(base.scheduler).from_config(base.scheduler.config)  # schedulers keep state
    if set(expected) <= set(base.components):
        try:
            pipe = rebuild(pipeline_cls, base, scheduler=scheduler)
        except (TypeError, ValueError) as exc:
            raise MoraError(f"cannot build {spec.pipeline} from the components of "
                            f"'{weights}': {str(exc).splitlines()[0]}") from None
        place(pipe, spec, runtime, shared=True)
    else:
        parts = {k: v for k, v in base.components.items()
                 if k in expected and k != "scheduler" and v is not None}
        pipe = _from_pretrained(spec, weights, runtime, scheduler=scheduler, **parts)
    cache.stats.shared += 1
    return pipe


def _from_pretrained(spec: PipelineSpec, weights: str, runtime: Runtime, **components: Any) -> Any:
    """``spec.pipeline`` from ``weights``; ``components`` already loaded are passed, not loaded."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # the torchvision fallback notice is expected
    pipeline_cls = pipeline_class(spec.pipeline)
    check_safe_weights(spec.model, weights)
    try:
        pipe = pipeline_cls.from_pretrained(
            weights,
            revision=spec.revision,
            variant=spec.variant,
            dtype=runtime.torch_dtype,
            # Never unpickle weights unless the operator opted in (None: prefer safetensors).
            use_safetensors=None if pickle_allowed() else True,
            **{name: None for name in spec.without},
            **components,
        )
    except (OSError, ValueError, EnvironmentError) as exc:
        raise _not_available(spec, weights, exc) from None
    pipe.set_progress_bar_config(disable=True)
    place(pipe, spec, runtime)
    return pipe


def load_text_tower(spec: PipelineSpec, runtime: Runtime, cache: ModelCache = MODEL_CACHE) -> tuple[Any, Any]:
    """``(tokenizer, CLIPTextModelWithProjection)`` of the text tower ``spec.text_tower`` names
    (the CLIP an SVD agent's image encoder belongs to), on the runtime's device, loaded once per
    process through the model cache; a one-line MoraError when the profile names none."""
    tower = spec.text_tower
    if tower is None:
        raise MoraError(f"modulation 'special_token' on {spec.pipeline} needs the CLIP text tower "
                        "paired with its image encoder: name it in the profile (image_to_video."
                        "text_tower: {model: laion/CLIP-ViT-H-14-laion2B-s32B-b79K} for SVD-XT) "
                        "or use modulation 'random' or 'off'")
    weights = resolve_weights(tower.model)
    key = ("text_tower", weights, model_identity(tower.model, tower.revision), tower.subfolder,
           tower.revision, runtime.device, runtime.dtype)
    return cache.get(key, lambda: _text_tower_from_pretrained(tower, weights, runtime))


def _text_tower_from_pretrained(tower: TextTowerSpec, weights: str, runtime: Runtime) -> tuple[Any, Any]:
    import transformers
    from transformers import AutoConfig, AutoTokenizer, CLIPTextModelWithProjection

    transformers.utils.logging.disable_progress_bar()
    folder = Path(weights) / (tower.subfolder or "")
    check_safe_weights(tower.model, folder, "text tower")
    where = dict(subfolder=tower.subfolder or "", revision=tower.revision)
    try:
        config = AutoConfig.from_pretrained(weights, **where)
        if config.model_type == "clip":
            # A whole CLIP repository: LAION's leave text_config.projection_dim at the 512
            # default; the projection width is the CLIP config's own.
            text_config = config.text_config
            text_config.projection_dim = config.projection_dim
        elif config.model_type == "clip_text_model":
            text_config = config
        else:
            raise MoraError(f"text tower '{tower.model}' is a {config.model_type} model, not a CLIP one")
        model = CLIPTextModelWithProjection.from_pretrained(
            weights, config=text_config, dtype=runtime.torch_dtype,
            use_safetensors=None if pickle_allowed() else True, **where)
        tokenizer = AutoTokenizer.from_pretrained(weights, **where)
    except (OSError, ValueError, EnvironmentError) as exc:
        if Path(weights).is_dir():
            raise MoraError(f"cannot load the text tower from '{folder}': {str(exc).splitlines()[0]}") from None
        raise (_missing_offline(weights) if hub_offline() else MoraError(
            f"text tower '{weights}' could not be loaded; {_how_to_fetch(weights)}")) from None
    return tokenizer, model.to(runtime.device).eval().requires_grad_(False)


def place(pipe: Any, spec: PipelineSpec, runtime: Runtime, shared: bool = False) -> None:
    """Put ``pipe`` on the runtime's device (or offload it) and set the memory options.

    ``shared``: its modules belong to an already placed pipeline too. Model offload is enabled
    again (it re-hooks the same modules in this pipeline's order); sequential offload is left as
    the first pipeline set it (its hooks live on the modules).
    """
    if shared and spec.offload == "sequential" and runtime.device != "cpu":
        return
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


def _not_available(spec: PipelineSpec, weights: str, exc: Exception) -> MoraError:
    if Path(weights).is_dir():
        return MoraError(f"cannot load {spec.pipeline} from '{weights}': {str(exc).splitlines()[0]}")
    if hub_offline():
        return _missing_offline(weights)
    return MoraError(f"model '{weights}' could not be loaded (no local copy and the hub is "
                     f"unreachable?); {_how_to_fetch(weights)}")


def _how_to_fetch(model: str) -> str:
    return (f"fetch it on a connected machine with `huggingface-cli download {model}` "
            "(then copy the HF cache here) or point the profile's model at a local folder")


def _missing_offline(model: str) -> MoraError:
    return MoraError(f"model '{model}' is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                     f"is set; {_how_to_fetch(model)}")
