"""The GPU check: what a user with a GPU hits first, in one command.

    .venv/bin/python benchmarks/gpu_check.py                 # needs CUDA; ~10 min on one H200
    .venv/bin/python benchmarks/gpu_check.py --device cpu --skip-real   # smoke test of the script

1. The tiny zoo on the device with each offload mode (none, model, sequential): seconds per
   video (text-to-image + image-to-video) through Mora's agents vs a plain diffusers script
   making the same calls on the same pipeline, and peak VRAM.
2. One fine-tuning chunk (tiny SVD, LoRA) on a profile with ``offload: model``: asserts the
   optimizer's parameters are on the device and the weights moved.
3. The real-size random ``sd3-svd`` and ``wan`` profiles (published architectures, random
   weights built straight into GPU memory, bf16, nothing written to disk) at their real
   resolutions: seconds per video (``--steps`` denoising steps per agent, extrapolated to the
   profile's steps), peak VRAM, and the ratio against the plain diffusers call. Models that do
   not fit the device's memory are skipped with the reason.

Prints a markdown table for benchmarks/README.md and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROWS: list[tuple[str, str, str, str, str]] = []  # check, setting, mora, plain, peak VRAM


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_vram(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _vram(device: str) -> str:
    import torch

    return f"{torch.cuda.max_memory_allocated() / 1024**3:.2f} GiB" if device.startswith("cuda") else "-"


def _timed(fn, device: str) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def _profile(name: str, device: str, dtype: str, offload: str, **sizes):
    from configs import load_profile

    prof = load_profile(name)
    update = {"device": device, "dtype": dtype, "threads": None if device.startswith("cuda") else 1}
    roles = {}
    for role in ("text_to_image", "image_to_image", "image_to_video", "connector"):
        roles[role] = getattr(prof, role).model_copy(update={"offload": offload, **sizes.get(role, {})})
    return prof.model_copy(update={**update, **roles})


def _plain_video(agent_t2i, agent_i2v, prompt: str, seed: int):
    """The same two calls as the agents make, straight on the pipelines (what a plain diffusers
    script would write): the agents' own arguments, no Mora code in between."""
    frame = agent_t2i.pipe(**agent_t2i.call_args(prompt=prompt),
                           generator=agent_t2i.generator(seed)).images[0]
    image = frame.convert("RGB").resize((agent_i2v.spec.width, agent_i2v.spec.height))
    text = agent_i2v.text_for(prompt)[0]
    return agent_i2v.pipe(**agent_i2v.call_args(image=image, prompt=text),
                          generator=agent_i2v.generator(seed)).frames[0]


def tiny_offload_modes(device: str, dtype: str) -> None:
    from agents.cache import MODEL_CACHE
    from agents.registry import agents_for

    modes = ("none", "model", "sequential") if device.startswith("cuda") else ("none",)
    for offload in modes:
        MODEL_CACHE.clear()
        _reset_vram(device)
        agents = agents_for(_profile("tiny", device, dtype, offload))
        prompt = "a red kite over a beach"
        agents.image_to_video(agents.text_to_image(prompt, 0), prompt, 0)  # loads + warm-up
        mora, _ = _timed(lambda: agents.image_to_video(agents.text_to_image(prompt, 1), prompt, 1), device)
        plain, _ = _timed(lambda: _plain_video(agents.text_to_image, agents.image_to_video, prompt, 1), device)
        ROWS.append(("tiny zoo t2i+i2v", f"offload {offload}", f"{mora:.2f} s", f"{plain:.2f} s ({mora / plain:.2f}x)",
                     _vram(device)))
        print(ROWS[-1], flush=True)


def tiny_finetune_on_device(device: str, dtype: str) -> None:
    import numpy as np
    import torch
    from PIL import Image

    import agents.finetune as ft
    from agents.cache import MODEL_CACHE
    from agents.registry import agents_for
    from configs.finetune import TINY_DEFAULTS, FinetuneSpec

    MODEL_CACHE.clear()
    _reset_vram(device)
    agent = agents_for(_profile("tiny", device, dtype, "model")).image_to_video
    pipe = agent.pipe
    seen: dict = {}
    adamw = torch.optim.AdamW

    class Recording(adamw):
        def __init__(self, params, *args, **kwargs):
            seen["params"] = list(params)
            super().__init__(seen["params"], *args, **kwargs)

    torch.optim.AdamW = Recording
    try:
        frames = np.random.default_rng(0).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
        sample = ft.TrainingSample("a kite", Image.fromarray(frames[0]), frames, fps=8)
        spec = FinetuneSpec(target="image_to_video", **{**TINY_DEFAULTS, "batch_size": 1, "max_steps": 2,
                                                        "checkpoint_every": 2, "method": "lora", "lora_rank": 4,
                                                        "modulation": "random", "learning_rate": 1e-2})
        seconds, (state, losses) = _timed(
            lambda: ft.finetune(pipe, spec, [sample], until_step=2, device=agent.runtime.device), device)
    finally:
        torch.optim.AdamW = adamw
    want = torch.device(agent.runtime.device)
    where = {p.device.type for p in seen["params"]}
    assert where == {want.type}, f"optimizer parameters on {where}, expected {want.type}"
    moved = any(k.startswith("param/") and ".lora_B." in k and float(v.abs().max()) > 0
                for k, v in state.tensors.items())
    assert moved, "LoRA B matrices still zero: the weights did not move"
    ROWS.append(("tiny fine-tuning chunk (offload model, LoRA, 2 steps)", f"optimizer on {want.type}, weights moved",
                 f"{seconds:.2f} s", f"loss {losses[0]:.3f}→{losses[-1]:.3f}", _vram(device)))
    print(ROWS[-1], flush=True)


def real_size(device: str, steps: int, profiles: list[str]) -> None:
    import torch

    from agents.cache import MODEL_CACHE
    from agents.loading import PipelineFamily, model_key
    from agents.random_weights import build_pipeline, parameter_count
    from agents.registry import agents_for
    from configs import load_profile

    free = torch.cuda.mem_get_info()[0] if device.startswith("cuda") else float("inf")
    for name in profiles:
        base = load_profile(name)
        prof = _profile(name, device, "bfloat16", "none",
                        text_to_image={"steps": min(steps, base.text_to_image.steps)},
                        image_to_video={"steps": min(steps, base.image_to_video.steps)})
        agents = agents_for(prof)
        prompt = "a red kite over a beach"
        frame = None
        for role, agent in (("text_to_image", agents.text_to_image), ("image_to_video", agents.image_to_video)):
            spec = getattr(prof, role)
            MODEL_CACHE.clear()
            _reset_vram(device)
            need = parameter_count(build_pipeline(spec.model, "bfloat16", meta=True)) * 2
            if need > 0.9 * free:
                ROWS.append((f"{name} {role}", spec.model, "skipped", f"needs {need / 1024**3:.0f} GiB", "-"))
                print(ROWS[-1], flush=True)
                break
            build_s, pipe = _timed(lambda: build_pipeline(spec.model, "bfloat16", device=device), device)
            pipe.set_progress_bar_config(disable=True)
            # The built pipeline stands in for the loaded one: the agents take it from the cache.
            from agents.loading import Runtime

            MODEL_CACHE.get(model_key(spec, spec.model, Runtime.of(device, "bfloat16")), lambda: PipelineFamily(pipe))
            # A one-step plain call warms the kernels up, then Mora's call and the plain one.
            if role == "text_to_image":
                args = agent.call_args(prompt=prompt)
                pipe(**{**args, "num_inference_steps": 1}, generator=agent.generator(0))
                mora, frame = _timed(lambda: agent(prompt, 1), device)
            else:
                image = frame.convert("RGB").resize((spec.width, spec.height))
                args = agent.call_args(image=image, prompt=agent.text_for(prompt)[0])
                pipe(**{**args, "num_inference_steps": 1}, generator=agent.generator(0))
                mora, _ = _timed(lambda: agent(frame, prompt, 1), device)
            plain, _ = _timed(lambda: pipe(**args, generator=agent.generator(1)), device)
            full = getattr(base, role).steps
            ROWS.append((f"{name} {role} {spec.width}x{spec.height}" + (f"x{spec.num_frames}" if spec.num_frames else ""),
                         f"{spec.steps} of {full} steps (build {build_s:.0f} s)",
                         f"{mora:.1f} s (~{mora / spec.steps * full:.0f} s at {full} steps)",
                         f"{plain:.1f} s ({mora / plain:.2f}x)", _vram(device)))
            print(ROWS[-1], flush=True)
            del pipe
            MODEL_CACHE.clear()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", help="tiny zoo dtype on the device")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per real-size call")
    parser.add_argument("--profiles", nargs="*", default=["sd3-svd", "wan"])
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here; run this on a GPU machine (or --device cpu --skip-real to smoke-test)")
    from agents.tiny import build_tiny_zoo

    build_tiny_zoo()
    tiny_offload_modes(args.device, args.dtype)
    tiny_finetune_on_device(args.device, args.dtype)
    if not args.skip_real:
        real_size(args.device, args.steps, args.profiles)

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"\n# GPU check on {gpu}, torch {torch.__version__}")
    print("| check | setting | Mora | plain diffusers (Mora/plain) | peak VRAM |\n|---|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")
    print("reproduce: .venv/bin/python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
