"""Make the `shapes` zoo's weights: ``python -m agents.shapes.build [--only sd3] [--out DIR]``.

Trains each model (agents/shapes/training.py) from its seeded initial weights
(agents/shapes/architectures.py) on the world's train split, measures it on fresh train-split
scenes and on held-out ones, and installs the pipeline folder (``save_pretrained``, float32
safetensors: exactly the weights it measured) at ``DIR/<name>`` under the zoo's lock with an atomic rename (agents/tiny/built.py). The marker
records the zoo version, the recipes, the figures and how long it took. The repository carries
the result in agents/shapes/weights/ (agents/shapes/zoo.py serves it), so a new machine never
trains; run this to reproduce or change them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from agents.shapes.zoo import SHAPES_MODELS, WEIGHTS_DIR, ZOO_VERSION
from agents.tiny import built

EVAL_SCENES = 120  # per split; the rates' 95 % intervals are about +-9 points
EVAL_STEPS, EVAL_GUIDANCE = 20, 1.0  # the shapes profile's text_to_image settings


def build_sd3(folder: Path, log=print, vae_recipe=None, denoiser_recipe=None,
              eval_scenes: int = EVAL_SCENES) -> dict:
    import torch

    from agents.shapes.architectures import untrained
    from agents.shapes.training import (DenoiserRecipe, VaeRecipe, first_frame_rates,
                                        train_denoiser, train_vae, vae_rates, world_frames)
    from configs.world import sample_scenes

    figures: dict = {}
    t0 = time.monotonic()
    pipe = untrained("sd3")
    scenes, frames = world_frames(3000, seed=0)
    vae_recipe, denoiser_recipe = vae_recipe or VaeRecipe(), denoiser_recipe or DenoiserRecipe()

    def every(n):
        return lambda step, loss, *_: (step % n == 0) and log(
            f"  step {step}: loss {loss:.4f} ({time.monotonic() - t0:.0f} s)")

    log("sd3: training the VAE")
    train_vae(pipe.vae, frames, vae_recipe, on_step=every(500))
    held_scenes, held_frames = world_frames(300, seed=1)
    figures["vae_reconstruction"] = vae_rates(pipe.vae, held_frames, held_scenes)
    log(f"  reconstruction read back: {figures['vae_reconstruction']}")
    log("sd3: training the transformer")
    train_denoiser(pipe, scenes, frames, denoiser_recipe, on_step=every(250))
    figures["train_seconds"] = round(time.monotonic() - t0, 1)
    for split in ("train", "held_out"):
        figures[f"first_frame_{split}"] = first_frame_rates(
            pipe, sample_scenes(eval_scenes, seed=99, split=split), EVAL_STEPS, EVAL_GUIDANCE)
        log(f"  first frames, {split}: {figures[f'first_frame_{split}']}")
    marker = {"name": "sd3", "pipeline": "StableDiffusion3Pipeline", "zoo_version": ZOO_VERSION,
              "seed": built.SEED, "recipes": {"vae": asdict(vae_recipe),
                                              "denoiser": asdict(denoiser_recipe)},
              "figures": figures, "eval": {"scenes": eval_scenes, "steps": EVAL_STEPS,
                                           "guidance": EVAL_GUIDANCE}}

    def save(tmp: Path) -> None:
        with built.quiet_progress_bars():
            pipe.save_pretrained(tmp, safe_serialization=True)

    with built.locked(folder.parent, folder.name):
        built.install_atomically(folder, folder.name, save, marker)
    return figures


BUILDERS = {"sd3": build_sd3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(BUILDERS), action="append")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    assert set(BUILDERS) <= set(SHAPES_MODELS)
    for name in args.only or sorted(BUILDERS):
        figures = BUILDERS[name](args.out / name)
        print(json.dumps({name: figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
