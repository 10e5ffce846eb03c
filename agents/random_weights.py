"""Real-architecture random models: a GPU profile's models at their *published* sizes, random weights.

``build_random_profile("sd3-svd")`` builds, offline, every model the profile names with the real
checkpoint's architecture (its ``config.json`` values, listed in configs/published.py with where
each comes from) and random weights, in the profile's dtype, saves each with
``save_pretrained`` (safetensors, sharded) under ``<MORA_HOME>/random/<profile>/<model>``, and
writes a profile beside them (``<MORA_HOME>/random/<profile>.yaml``) whose models are those
folders: the same agents then load them through ``from_pretrained`` exactly like a download.
Outputs are noise. Each folder carries :data:`MARKER`, so every artifact made with one records
``random weights`` as its model revision (:func:`is_random`) and the CLI says so.

Built in the target dtype (``torch.set_default_dtype`` around each component's constructor): no
fp32 copy of a billion-parameter module is ever made. A model whose weights in that dtype exceed
the memory allowed for a build (``max_gb``) is skipped with the reason, e.g. Wan 2.1 14B
(~28 GB in bf16) on a 24 GB machine.

Tokenizers cannot be downloaded: they are built offline (agents/tiny/vocab.py) with
the real ``model_max_length``; the text encoders keep the real vocabulary size.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from configs.errors import MoraError
from configs.published import PUBLISHED, Published
from configs.settings import mora_home

MARKER = "mora-random.json"
SEED = 0
ROLES = ("text_to_image", "image_to_image", "image_to_video", "connector")
_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class BuildResult:
    model: str
    folder: Path | None  # None: skipped
    reason: str  # "built", "present", or why it was skipped
    gigabytes: float


def random_root(home: Path | None = None) -> Path:
    return Path(home if home is not None else mora_home()).expanduser() / "random"


def model_folder(profile: str, model: str, home: Path | None = None) -> Path:
    return random_root(home) / profile / re.sub(r"[^A-Za-z0-9._-]+", "--", model)


def profile_path(profile: str, home: Path | None = None) -> Path:
    return random_root(home) / f"{profile}.yaml"


@lru_cache(maxsize=256)
def is_random(model: str) -> bool:
    """Whether ``model`` (a local folder) holds random weights made by this module."""
    try:
        return (Path(model).expanduser() / MARKER).is_file()
    except (OSError, ValueError):
        return False


def build_random_profile(profile: str, dtype: str | None = None, max_gb: float = 12.0,
                         home: Path | None = None, force: bool = False,
                         on_model: Callable[[BuildResult], None] | None = None) -> tuple[Path, list[BuildResult]]:
    """Build every model ``profile`` names at its published architecture with random weights.

    Returns the generated profile's path (its models: the built folders; those skipped keep
    their hub ids) and one :class:`BuildResult` per distinct model. ``dtype``: the weights' dtype
    (default: the profile's). ``max_gb``: a model whose weights need more is skipped.
    """
    import yaml

    from configs import load_profile

    prof = load_profile(profile)
    dtype = dtype or prof.dtype
    if dtype not in _BYTES:
        raise MoraError(f"dtype must be one of {', '.join(_BYTES)}, got {dtype!r}")
    if not max_gb > 0:
        raise MoraError(f"max-gb must be a positive number of GB, got {max_gb}")
    results: dict[str, BuildResult] = {}
    towers = [spec.text_tower.model for spec in (getattr(prof, role) for role in ROLES) if spec.text_tower]
    for model in [getattr(prof, role).model for role in ROLES] + towers:
        if model in results:
            continue
        if model not in PUBLISHED:
            raise MoraError(f"no published architecture recorded for '{model}' (known: "
                            f"{', '.join(PUBLISHED)})")
        published = PUBLISHED[model]
        billions = parameter_count(build_pipeline(model, dtype, meta=True)) / 1e9
        gigabytes = billions * 1e9 * _BYTES[dtype] / 1024**3
        folder = model_folder(prof.name, model, home)
        if gigabytes > max_gb:
            result = BuildResult(model, None, f"skipped: its {billions:.1f} B parameters need "
                                 f"~{gigabytes:.0f} GB in {dtype}, more than the {max_gb:g} GB allowed "
                                 "for a build on this machine", gigabytes)
        elif not force and _marker_ok(folder, dtype):
            result = BuildResult(model, folder, "present", gigabytes)
        else:
            _build_and_save(model, published, dtype, folder)
            result = BuildResult(model, folder, "built", gigabytes)
        results[model] = result
        if on_model is not None:
            on_model(result)
    data = prof.model_dump(mode="json", exclude_defaults=True)
    data["name"] = f"{prof.name}-random"
    data["dtype"] = dtype
    data["description"] = f"{prof.description} — random weights at the published architectures (outputs are noise)"
    for role in ROLES:
        result = results[data[role]["model"]]
        if result.folder is not None:
            data[role]["model"] = str(result.folder)
            data[role].pop("variant", None)  # saved without a variant suffix
            if without := PUBLISHED[result.model].without:
                data[role]["without"] = list(without)
        tower = data[role].get("text_tower")
        if tower and results[tower["model"]].folder is not None:
            tower["model"] = str(results[tower["model"]].folder)
    path = profile_path(prof.name, home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `mora models build-random`: random weights, outputs are noise.\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path, list(results.values())


def parameter_count(pipe) -> int:
    """Parameters of every torch component of ``pipe`` (meta ones included)."""
    import torch

    return sum(p.numel() for part in pipe.components.values() if isinstance(part, torch.nn.Module)
               for p in part.parameters())


def _marker_ok(folder: Path, dtype: str) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("dtype") == dtype
    except (OSError, ValueError):
        return False


def _build_and_save(model: str, published: Published, dtype: str, folder: Path) -> None:
    import gc

    from agents.tiny.built import install_atomically, quiet_progress_bars

    def save(tmp: Path) -> None:
        pipe = build_pipeline(model, dtype)
        with quiet_progress_bars():
            # Small shards: serialising a shard holds its bytes once more in memory.
            pipe.save_pretrained(tmp, safe_serialization=True, max_shard_size="1GB")
        del pipe
        gc.collect()
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # what is_random reads

    marker = {"model": model, "weights": "random weights", "dtype": dtype, "seed": SEED,
              "architecture_sources": list(published.sources), "note": published.note}
    with _locked_folder(folder):
        install_atomically(folder, folder.name, save, marker)
    is_random.cache_clear()


def _locked_folder(folder: Path):
    from agents.tiny.built import locked

    folder.parent.mkdir(parents=True, exist_ok=True)
    return locked(folder.parent, folder.name)


def build_pipeline(model: str, dtype: str, meta: bool = False, device: str | None = None):
    """The (unsaved) pipeline of ``model`` at its published architecture, random weights in
    ``dtype``, its modules made on ``device`` (None: the CPU; e.g. ``cuda`` to build straight
    into GPU memory). ``meta``: parameters without storage, to check shapes and sizes for free."""
    import torch

    published = PUBLISHED[model]
    builders = {"StableDiffusion3Pipeline": _sd3, "StableVideoDiffusionPipeline": _svd,
                "StableDiffusionXLPipeline": _sdxl, "StableDiffusionInstructPix2PixPipeline": _ip2p,
                "WanImageToVideoPipeline": _wan, "CLIPTextModelWithProjection": _text_tower}
    token = _DEVICE.set("meta" if meta else device)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            return builders[published.pipeline](published.components, getattr(torch, dtype))
    finally:
        _DEVICE.reset(token)


_DEVICE: contextvars.ContextVar[str | None] = contextvars.ContextVar("mora_random_device", default=None)


def _in_dtype(dtype, factory: Callable):
    """``factory()`` with new parameters created directly in ``dtype`` (no fp32 peak)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(_DEVICE.get()) if _DEVICE.get() else contextlib.nullcontext():
            return factory().eval()
    finally:
        torch.set_default_dtype(previous)


@lru_cache(maxsize=1)
def _clip_tokenizer():
    """Built offline (a few seconds: it learns its merges); the real CLIP's 77-token length."""
    from agents.tiny.vocab import build_clip_tokenizer

    return build_clip_tokenizer(77)


def _clip_text(config: dict, tokenizer, dtype, projection: bool = True):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(**config, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _in_dtype(dtype, lambda: cls(cfg))


def _clip_vision(config: dict, dtype):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vision = CLIPVisionConfig(**config)
    return _in_dtype(dtype, lambda: CLIPVisionModelWithProjection(vision))


def _clip_image_processor():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})


class _TextTower:
    """A CLIP text tower and its tokenizer, saved side by side as a CLIP repository holds them."""

    def __init__(self, text_encoder, tokenizer):
        self.components = {"text_encoder": text_encoder, "tokenizer": tokenizer}

    def save_pretrained(self, folder, **kwargs) -> None:
        self.components["text_encoder"].save_pretrained(folder, **kwargs)
        self.components["tokenizer"].save_pretrained(folder)


def _text_tower(components: dict, dtype):
    tokenizer = _clip_tokenizer()
    return _TextTower(_clip_text(components["text_encoder"], tokenizer, dtype), tokenizer)


def _sd3(components: dict, dtype):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer = tokenizer_2 = _clip_tokenizer()
    return StableDiffusion3Pipeline(
        transformer=_in_dtype(dtype, lambda: SD3Transformer2DModel(**components["transformer"])),
        scheduler=FlowMatchEulerDiscreteScheduler(**components["scheduler"]),
        vae=_in_dtype(dtype, lambda: AutoencoderKL(**components["vae"])),
        text_encoder=_clip_text(components["text_encoder"], tokenizer, dtype), tokenizer=tokenizer,
        text_encoder_2=_clip_text(components["text_encoder_2"], tokenizer_2, dtype), tokenizer_2=tokenizer_2,
        text_encoder_3=None, tokenizer_3=None)


def _svd(components: dict, dtype):
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)

    return StableVideoDiffusionPipeline(
        vae=_in_dtype(dtype, lambda: AutoencoderKLTemporalDecoder(**components["vae"])),
        image_encoder=_clip_vision(components["image_encoder"], dtype),
        unet=_in_dtype(dtype, lambda: UNetSpatioTemporalConditionModel(**components["unet"])),
        scheduler=EulerDiscreteScheduler(**components["scheduler"]),
        feature_extractor=_clip_image_processor())


def _sdxl(components: dict, dtype):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = tokenizer_2 = _clip_tokenizer()
    return StableDiffusionXLPipeline(
        unet=_in_dtype(dtype, lambda: UNet2DConditionModel(**components["unet"])),
        vae=_in_dtype(dtype, lambda: AutoencoderKL(**components["vae"])),
        text_encoder=_clip_text(components["text_encoder"], tokenizer, dtype, projection=False), tokenizer=tokenizer,
        text_encoder_2=_clip_text(components["text_encoder_2"], tokenizer_2, dtype), tokenizer_2=tokenizer_2,
        scheduler=EulerDiscreteScheduler(**components["scheduler"]))


def _ip2p(components: dict, dtype):
    from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                           UNet2DConditionModel)

    tokenizer = _clip_tokenizer()
    return StableDiffusionInstructPix2PixPipeline(
        unet=_in_dtype(dtype, lambda: UNet2DConditionModel(**components["unet"])),
        vae=_in_dtype(dtype, lambda: AutoencoderKL(**components["vae"])),
        text_encoder=_clip_text(components["text_encoder"], tokenizer, dtype, projection=False), tokenizer=tokenizer,
        scheduler=EulerAncestralDiscreteScheduler(**components["scheduler"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _wan(components: dict, dtype):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from agents.tiny.vocab import build_t5_tokenizer

    tokenizer = build_t5_tokenizer(512)
    text = UMT5Config(**components["text_encoder"], pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=_in_dtype(dtype, lambda: UMT5EncoderModel(text)),
        image_encoder=_clip_vision(components["image_encoder"], dtype), image_processor=_clip_image_processor(),
        transformer=_in_dtype(dtype, lambda: WanTransformer3DModel(**components["transformer"])),
        vae=_in_dtype(dtype, lambda: AutoencoderKLWan(**components["vae"])),
        scheduler=UniPCMultistepScheduler(**components["scheduler"]))
