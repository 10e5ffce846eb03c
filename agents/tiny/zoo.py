"""The offline tiny model zoo: the diffusers pipelines of agents/tiny/pipelines.py, saved with
``save_pretrained`` under ``<MORA_HOME>/tiny/<name>`` and from then on loaded exactly like a
real checkpoint: ``DiffusionPipeline.from_pretrained(dir)``. Nothing is downloaded. Building and
caching go through agents/tiny/built.py (lock, atomic rename, versioned marker).
"""

from __future__ import annotations

from pathlib import Path

from agents.tiny import built
from configs.errors import MoraError

TINY_MODELS: tuple[str, ...] = ("sd3", "svd", "wan-i2v", "wan-flf2v", "ip2p")

# 2: the CLIP tokenizers' merges are learnt by the tokenizers library's BpeTrainer (agents/tiny/vocab.py);
# 3: the svd folder carries its paired CLIP text tower (text_tower/, for SVD's special-token modulation).
ZOO_VERSION = 3
SVD_TEXT_TOWER = "text_tower"  # subfolder of tiny/svd (profiles: text_tower: {model: tiny:svd, subfolder: text_tower})

# The pipeline class each folder loads as (DiffusionPipeline.from_pretrained(dir) -> this).
PIPELINE_CLASSES: dict[str, str] = {
    "sd3": "StableDiffusion3Pipeline",
    "svd": "StableVideoDiffusionPipeline",
    "wan-i2v": "WanImageToVideoPipeline",
    "wan-flf2v": "WanImageToVideoPipeline",
    "ip2p": "StableDiffusionInstructPix2PixPipeline",
}


def _check_name(name: str) -> None:
    if name not in TINY_MODELS:
        raise MoraError(f"unknown tiny model {name!r} (known: {', '.join(TINY_MODELS)})")


def tiny_model_dir(name: str, home: Path | None = None) -> Path:
    """``<home>/tiny/<name>`` (home defaults to ``configs.settings.mora_home()``); does not build."""
    _check_name(name)
    return built.zoo_root(home) / name


def is_built(name: str, home: Path | None = None) -> bool:
    """True when the folder holds a complete build of the current zoo version."""
    return built.is_built(tiny_model_dir(name, home), ZOO_VERSION)


def ensure_tiny_model(name: str, home: Path | None = None, force: bool = False) -> Path:
    """Build ``name`` if it is missing (or from an older zoo version; ``force``: always) and
    return its folder. Idempotent and race safe (agents/tiny/built.py)."""
    folder = tiny_model_dir(name, home)
    marker = {"name": name, "pipeline": PIPELINE_CLASSES[name], "seed": built.SEED, "zoo_version": ZOO_VERSION}
    return built.ensure_built(folder, marker, lambda tmp: _save(name, tmp), force)


def build_tiny_zoo(home: Path | None = None, force: bool = False) -> dict[str, Path]:
    """Build every model of :data:`TINY_MODELS` (``force`` rebuilds built ones); name -> folder."""
    return {name: ensure_tiny_model(name, home, force) for name in TINY_MODELS}


def build_tiny_pipeline(name: str):
    """A freshly initialised (unsaved) tiny pipeline for ``name``; deterministic for a given name."""
    from agents.tiny.pipelines import build_pipeline

    _check_name(name)
    return build_pipeline(name)


def _save(name: str, folder: Path) -> None:
    pipe = build_tiny_pipeline(name)
    with built.quiet_progress_bars():
        pipe.save_pretrained(folder, safe_serialization=True)
        if name == "svd":
            from agents.tiny.pipelines import build_svd_text_tower

            build_svd_text_tower(folder / SVD_TEXT_TOWER)
