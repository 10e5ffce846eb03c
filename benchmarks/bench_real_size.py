"""Real-size dry run on a CPU: the `sd3-svd` profile at its published architectures (random
weights; T5-XXL dropped, as SD3 allows) at a small resolution and 1–2 steps — text-to-video, one
LoRA fine-tuning chunk of the SVD-XT UNet, one held-out score — with seconds and peak RSS per
stage, one model family resident at a time (freed between stages).

    .venv/bin/mora models build-random sd3-svd            # once: ~10 GB under $MORA_HOME/random
    .venv/bin/python benchmarks/bench_real_size.py [--size 128] [--frames 4] [--steps 2]

The models load in bf16 by default (the profile's fp16 would run as fp32 on a CPU: twice the
memory); ``--dtype float32`` where the CPU lacks native bf16 (its bf16 convolutions are ~100x
slower than fp32), at twice the memory. The fine-tuning goal: peak RSS ≤ 1.5 × the bf16 weights of the models it loads (SVD-XT: UNet, VAE,
image encoder) plus the activations at this resolution. Outputs are noise: the figures are
seconds and bytes, not quality.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def rss_peak_mib() -> float:
    """Peak resident memory since the last :func:`reset_peak` (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


class Stages:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, str]] = []

    def run(self, name: str, fn, note: str = ""):
        reset_peak()
        start = time.perf_counter()
        out = fn()
        self.rows.append((name, time.perf_counter() - start, rss_peak_mib(), note))
        print(f"  {name}: {self.rows[-1][1]:.1f} s, peak RSS {self.rows[-1][2]:.0f} MiB", flush=True)
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128, help="height = width of frames (multiple of 16)")
    parser.add_argument("--frames", type=int, default=4, help="SVD frames per video")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per agent")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="bf16 halves the memory; on CPUs without native bf16 its convolutions run "
                             "~100x slower than fp32 (float32 then keeps the dry run to minutes)")
    args = parser.parse_args()

    import numpy as np
    import torch
    import yaml

    torch.set_num_threads(args.threads)
    from agents.cache import MODEL_CACHE
    from agents.finetune import TrainingSample, finetune, inference_weights, load_state, save_state
    from agents.judges import MetricCache, MetricJudge
    from agents.random_weights import build_random_profile
    from agents.registry import agents_for
    from configs import load_profile
    from configs.finetune import PAPER_DEFAULTS, FinetuneSpec
    from configs.judges import DEFAULT_METRIC_JUDGES
    from storage import media

    stages = Stages()
    print(f"# real-size dry run: sd3-svd, random weights, {args.size}x{args.size}, "
          f"{args.frames} frames, {args.steps} steps, {args.dtype}, {args.threads} threads", flush=True)
    path, built = stages.run("build-random (or find) sd3-svd", lambda: build_random_profile("sd3-svd"))
    for result in built:
        print(f"    {result.model}: {result.reason}")

    # The built profile at this machine's scale: CPU, bf16, small frames, few steps, no offload.
    data = yaml.safe_load(Path(path).read_text())
    data.update(name="sd3-svd-random-cpu", device="cpu", dtype=args.dtype, threads=args.threads)
    for role in ("text_to_image", "image_to_image", "image_to_video", "connector"):
        data[role].update(height=args.size, width=args.size, steps=args.steps, offload="none")
    data["image_to_video"].update(num_frames=args.frames)
    data["image_to_video"].setdefault("call_kwargs", {})["decode_chunk_size"] = args.frames
    bench_profile = Path(tempfile.mkdtemp(prefix="mora-real-size-")) / "sd3-svd-random-cpu.yaml"
    bench_profile.write_text(yaml.safe_dump(data, sort_keys=False))
    profile = load_profile(str(bench_profile))
    agents = agents_for(profile)
    prompt = agents.enhancer.enhance("a red kite over a beach")

    def free() -> None:
        MODEL_CACHE.clear()
        gc.collect()

    # 1. Text-to-video: SD3-medium first frame, then SVD-XT animates it (one family at a time).
    frame = stages.run("text-to-image (SD3-medium load + call)", lambda: agents.text_to_image(prompt, 0))
    free()
    video = stages.run("image-to-video (SVD-XT load + call)", lambda: agents.image_to_video(frame, prompt, 0))
    pipe = agents.image_to_video.pipe
    weights_gib = sum(p.numel() * p.element_size() for part in pipe.components.values()
                      if isinstance(part, torch.nn.Module) for p in part.parameters()) / 1024**3
    target = media.images_to_array(video)

    # 2. One LoRA fine-tuning chunk of the SVD-XT UNet (paper settings but batch 1, one step).
    spec = FinetuneSpec(target="image_to_video", **{**PAPER_DEFAULTS, "batch_size": 1, "max_steps": 1,
                                                    "checkpoint_every": 1}, method="lora", lora_rank=16,
                        modulation="random")
    sample = TrainingSample(prompt=prompt, first_frame=frame, target=target, fps=profile.image_to_video.fps)
    state, losses = stages.run("LoRA fine-tuning chunk (1 step, SVD-XT UNet)",
                               lambda: finetune(pipe, spec, [sample], until_step=1, device="cpu"))
    finetune_peak = stages.rows[-1][2]
    checkpoint = Path(tempfile.mkdtemp(prefix="mora-real-size-ckpt-")) / "state.safetensors"

    def write_and_read():
        save_state(state, checkpoint)
        return load_state(checkpoint)

    stages.run("checkpoint write + read (safetensors, streamed)", write_and_read)
    weights = inference_weights(state)
    del state
    gc.collect()

    # 3. One held-out score: the fine-tuned SVD on the held-out frame, judged by the metric judges.
    from agents.base import FinetunedWeights

    def held_out() -> float:
        tuned = agents.image_to_video.with_weights(FinetunedWeights("bench", lambda: weights))
        clip = media.images_to_array(tuned(frame, prompt, 1))
        cache = MetricCache()
        return float(np.mean([MetricJudge(s).rank([clip], float(profile.image_to_video.fps), prompt, 3,
                                                  metric_cache=cache).scores[0] for s in DEFAULT_METRIC_JUDGES]))

    score = stages.run("held-out score (fine-tuned SVD-XT + metric judges)", held_out)
    free()

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print("| stage | seconds | peak RSS MiB |\n|---|---|---|")
    for name, seconds, peak, _ in stages.rows:
        print(f"| {name} | {seconds:.1f} | {peak:.0f} |")
    goal = 1.5 * weights_gib * 1024
    print(f"SVD-XT weights loaded ({args.dtype}): {weights_gib:.2f} GiB; fine-tuning peak {finetune_peak:.0f} MiB "
          f"= {finetune_peak / (weights_gib * 1024):.2f} x weights (goal <= 1.5 x + activations: "
          f"{goal:.0f} MiB + activations); loss {losses[0]:.4f}; held-out score {score:.4f}")
    print(f"reproduce: .venv/bin/python benchmarks/bench_real_size.py --size {args.size} "
          f"--frames {args.frames} --steps {args.steps} --threads {args.threads} --dtype {args.dtype}")


if __name__ == "__main__":
    main()
