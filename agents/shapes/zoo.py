"""Where the `shapes` zoo's trained pipelines are: ``shapes:<name>`` in a profile names the
folder agents/shapes/weights/<name> of this checkout, a diffusers pipeline folder loaded with
``from_pretrained`` like any checkpoint. agents/shapes/build.py made them (and remakes them);
its marker (agents/tiny/built.py ``MARKER``) records the zoo version, the recipes and the rates
measured at build time, so a folder from another zoo version is refused, not half-used.
"""

from __future__ import annotations

import json
from pathlib import Path

from agents.tiny import built
from configs.errors import MoraError

SHAPES_MODELS: tuple[str, ...] = ("sd3", "wan-i2v")
ZOO_VERSION = 2  # 2: the world's paths sit near the centre (configs/world/render.py JITTER)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def shapes_model_dir(name: str) -> Path:
    """The folder of the trained ``shapes:<name>``; a one-line error when it is not there."""
    if name not in SHAPES_MODELS:
        raise MoraError(f"unknown shapes model {name!r} (known: {', '.join(SHAPES_MODELS)})")
    folder = WEIGHTS_DIR / name
    if not built.is_built(folder, ZOO_VERSION):
        raise MoraError(f"the shapes model {name!r} is not built at {folder} "
                        f"(python -m agents.shapes.build --only {name})")
    return folder


def build_figures(name: str) -> dict:
    """The rates ``shapes:<name>`` measured when it was built (its marker's ``figures``)."""
    return json.loads((shapes_model_dir(name) / built.MARKER).read_text())["figures"]
