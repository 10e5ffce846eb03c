"""Where a `shapes` clip starts, and whether the shapes zoo's text-to-image model can learn it.

The world first placed each clip's path uniformly anywhere in the frame; the SD3 model trained on
it (agents/shapes/) drew several fragments of the right colour scattered over the frame instead of
one shape. The world now centres each path on the frame, give or take
``configs/world/render.py`` ``JITTER`` px. This trains the same seeded transformer from the same
VAE (the committed one, agents/shapes/weights/sd3/vae), with the same recipe except for the
number of steps, on first frames of 3000 train-split scenes rendered either way, samples 48
train-split captions (new seeds; 20 steps, guidance 1) and reads them back (metrics/world.py),
then saves a 4x4 contact sheet. One arm per process; run both side by side:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_shapes_start.py --arm uniform &
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_shapes_start.py --arm centred; wait

(~13 min each on the 2-core machine with one thread each, 2000 steps).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def uniform_start(scene, seed, frames, size=64):
    """The world's first placement (before JITTER): a seeded start anywhere the path fits."""
    from configs.world import VELOCITY
    from configs.world.render import RADIUS

    rng = random.Random(f"mora-shapes-start-{scene.caption}-{seed}-{frames}")
    dx, dy = VELOCITY[scene.motion]
    step = (dx * scene.speed, dy * scene.speed)
    low, high = RADIUS + 1, size - 2 - RADIUS
    centre = []
    for move in step:
        travel = move * (frames - 1)
        lo, hi = (low - min(travel, 0), high - max(travel, 0))
        centre.append(rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2)
    return (centre[0], centre[1]), step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", choices=("uniform", "centred"), required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()

    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from PIL import Image

    from agents.shapes import training
    from agents.shapes.architectures import untrained
    from agents.shapes.zoo import WEIGHTS_DIR
    from configs.world import render as world_render
    from configs.world import sample_scenes

    torch.set_num_threads(args.threads)
    if args.arm == "uniform":
        world_render.start_and_step = uniform_start  # render() looks it up at call time
    pipe = untrained("sd3")
    pipe.vae = AutoencoderKL.from_pretrained(WEIGHTS_DIR / "sd3" / "vae")
    scenes, frames = training.world_frames(3000, seed=0)
    t0 = time.monotonic()
    training.train_denoiser(pipe, scenes, frames, training.DenoiserRecipe(steps=args.steps))
    train_s = time.monotonic() - t0
    evaluation = sample_scenes(48, seed=99, split="train")
    rates = training.first_frame_rates(pipe, evaluation, steps=20, guidance=1.0)
    images = []
    for i, scene in enumerate(evaluation[:16]):
        out = pipe(scene.caption, height=64, width=64, num_inference_steps=20, guidance_scale=1.0,
                   output_type="np", generator=torch.Generator().manual_seed(i))
        images.append((out.images[0] * 255).round().astype(np.uint8))
    sheet = np.concatenate([np.concatenate(images[r * 4:(r + 1) * 4], axis=1) for r in range(4)])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"shapes-start-{args.arm}-{args.steps}.png"
    Image.fromarray(sheet).resize((512, 512), Image.NEAREST).save(path)
    print(json.dumps({"arm": args.arm, "steps": args.steps, "train_s": round(train_s),
                      "rates": {k: round(v, 3) for k, v in rates.items()}, "sheet": str(path)}))
    print("reproduce: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_shapes_start.py "
          f"--arm {args.arm} --steps {args.steps}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
