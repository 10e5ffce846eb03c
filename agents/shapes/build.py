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


def _log(message: str) -> None:
    print(message, flush=True)  # a build's progress shows in a log file as it goes


def _every(log, t0: float):
    """``every(n)``: an ``on_step`` callback that logs the loss each ``n`` steps."""
    return lambda n: lambda step, loss, *_: (step % n == 0) and log(
        f"  step {step}: loss {loss:.4f} ({time.monotonic() - t0:.0f} s)")


def build_sd3(folder: Path, log=_log, vae_recipe=None, denoiser_recipe=None,
              eval_scenes: int = EVAL_SCENES) -> dict:
    import torch

    from agents.shapes.architectures import untrained
    from agents.shapes.training import (DenoiserRecipe, VaeRecipe, first_frame_rates,
                                        train_denoiser, train_vae, vae_rates, world_frames)
    from configs.world import sample_scenes

    figures: dict = {}
    t0 = time.monotonic()
    every = _every(log, t0)
    pipe = untrained("sd3")
    scenes, frames = world_frames(3000, seed=0)
    vae_recipe, denoiser_recipe = vae_recipe or VaeRecipe(), denoiser_recipe or DenoiserRecipe()

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

    _install(pipe, folder, marker)
    return figures


I2V_CLIPS, I2V_FRAMES = 1500, 9  # the shapes profile's image_to_video num_frames
WAN_VAE_FRAMES = 5  # a causal 3D VAE (3-frame kernels) learns from 5 frames what it does from 9


def build_wan_i2v(folder: Path, log=_log, vae_recipe=None, denoiser_recipe=None,
                  eval_scenes: int = EVAL_SCENES) -> dict:
    """The image-to-video agent: a Wan I2V pipeline that takes the first frame and the caption."""
    import numpy as np

    from agents.shapes.architectures import untrained
    from agents.shapes.training import (DenoiserRecipe, VaeRecipe, animation_rates,
                                        train_denoiser, train_vae, vae_rates, world_clips)

    figures: dict = {}
    t0 = time.monotonic()
    every = _every(log, t0)
    pipe = untrained("wan-i2v")
    scenes, clips = world_clips(I2V_CLIPS, seed=0, frames=I2V_FRAMES)
    vae_recipe = vae_recipe or VaeRecipe(steps=2000, batch_size=4)
    denoiser_recipe = denoiser_recipe or DenoiserRecipe(steps=2000, batch_size=8)

    log("wan-i2v: training the VAE")
    train_vae(pipe.vae, np.ascontiguousarray(clips[:, :WAN_VAE_FRAMES]), vae_recipe,
              on_step=every(250))
    held_scenes, held_clips = world_clips(60, seed=1, frames=I2V_FRAMES)
    figures["vae_reconstruction"] = vae_rates(pipe.vae, held_clips, held_scenes)
    log(f"  reconstruction read back: {figures['vae_reconstruction']}")
    log("wan-i2v: training the transformer")
    train_denoiser(pipe, scenes, clips, denoiser_recipe, on_step=every(250))
    figures["train_seconds"] = round(time.monotonic() - t0, 1)
    for split in ("train", "held_out"):
        eval_set, eval_clips = world_clips(eval_scenes, seed=99, split=split, frames=I2V_FRAMES)
        figures[f"animation_{split}"] = animation_rates(
            pipe, eval_set, eval_clips[:, 0], EVAL_STEPS, EVAL_GUIDANCE, I2V_FRAMES)
        log(f"  animations of the world's first frames, {split}: "
            f"{figures[f'animation_{split}']}")
    marker = {"name": "wan-i2v", "pipeline": "WanImageToVideoPipeline",
              "zoo_version": ZOO_VERSION, "seed": built.SEED,
              "recipes": {"vae": {**asdict(vae_recipe), "frames": WAN_VAE_FRAMES},
                          "denoiser": {**asdict(denoiser_recipe), "clips": I2V_CLIPS,
                                       "frames": I2V_FRAMES}},
              "figures": figures, "eval": {"scenes": eval_scenes, "steps": EVAL_STEPS,
                                           "guidance": EVAL_GUIDANCE}}
    _install(pipe, folder, marker)
    return figures


def _install(pipe, folder: Path, marker: dict) -> None:
    def save(tmp: Path) -> None:
        with built.quiet_progress_bars():
            pipe.save_pretrained(tmp, safe_serialization=True)

    with built.locked(folder.parent, folder.name):
        built.install_atomically(folder, folder.name, save, marker)


BUILDERS = {"sd3": build_sd3, "wan-i2v": build_wan_i2v}


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
