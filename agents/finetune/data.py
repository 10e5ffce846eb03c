"""What fine-tuning trains on: the selected samples, their checks, and the seeded order of batches.

Randomness is a pure function of ``(spec.seed, step, micro-batch)`` (noise, timesteps, the
noise augmentation) and ``(spec.seed, epoch)`` (sample order), drawn on the CPU, so chunked
training needs no RNG state and matches uninterrupted training; the state also carries the
AdamW moments, the EMA shadows and the LR schedule position (= step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from configs.errors import MoraError
from configs.finetune import FinetuneSpec


@dataclass
class TrainingSample:
    """One selected example: the prompt, the first frame it was conditioned on, the chosen output.

    ``target`` is ``T×H×W×3`` uint8 for a video (image-to-video) or ``H×W×3`` for an image
    (text-to-image; ``first_frame`` is unused there). ``fps`` is SVD's fps conditioning (None:
    the pipeline's default, 7).
    """

    prompt: str
    first_frame: Image.Image
    target: np.ndarray
    fps: int | None = None


def check_samples(samples: list[TrainingSample], family: str, spec: FinetuneSpec) -> None:
    if not samples:
        raise MoraError("fine-tuning needs at least one sample")
    video = family != "sd3"
    shape = None
    for i, s in enumerate(samples):
        target = s.target
        if not isinstance(target, np.ndarray) or target.dtype != np.uint8:
            raise MoraError(f"sample {i}: target must be a uint8 numpy array")
        if target.ndim != (4 if video else 3) or target.shape[-1] != 3:
            want = "T×H×W×3 video" if video else "H×W×3 image"
            raise MoraError(f"sample {i}: target must be a {want}, got shape {target.shape}")
        if shape is not None and target.shape != shape:
            raise MoraError(f"sample {i}: target shape {target.shape} differs from {shape} (one size per run)")
        shape = target.shape
        if video and not isinstance(s.first_frame, Image.Image):
            raise MoraError(f"sample {i}: first_frame must be a PIL image")
        if family != "svd" and not (isinstance(s.prompt, str) and s.prompt.strip()):
            raise MoraError(f"sample {i}: empty prompt")
    height, width = shape[-3], shape[-2]
    multiple = 8 if family == "svd" else 16
    if height % multiple or width % multiple:
        raise MoraError(f"{family} trains on sizes that are multiples of {multiple}, got {width}x{height}")
    if family == "wan" and shape[0] % 4 != 1:
        raise MoraError(f"Wan trains on 4k+1 frames, got {shape[0]}")


def seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0])


def batch_indices(spec: FinetuneSpec, n: int, step: int, micro: int) -> list[int]:
    """Sample indices of one micro-batch: epoch-wise seeded permutations, a function of the step."""
    first = (step * spec.grad_accumulation + micro) * spec.batch_size
    out = []
    for i in range(first, first + spec.batch_size):
        epoch, pos = divmod(i, n)
        order = torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(seed_of(spec.seed, 1, epoch)))
        out.append(int(order[pos]))
    return out
