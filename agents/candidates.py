"""Candidate videos of the training loop (paper A.6): one prompt through the text-to-image and
image-to-video agents once per seed, ``batch`` seeds per pipeline call (the same frames as one
call per seed: agents/base.py's batch plans). No Prefect, no store: tasks/training.py's
`sample_candidates` stores what this makes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def sample_batches(text_to_image: Any, image_to_video: Any, prompt: str, seeds: list[int],
                   batch: int | None, exact: bool) -> Iterator[tuple[int, list[int], list, list]]:
    """Per batch of ``batch`` seeds (all of them when None or 0): the index of its first seed,
    its seeds, their first frames and their videos (lists of PIL images)."""
    size = batch or len(seeds)
    for start in range(0, len(seeds), size):
        chunk = seeds[start:start + size]
        frames = text_to_image.batch(prompt, chunk, exact)
        yield start, chunk, frames, image_to_video.batch(frames, prompt, chunk, exact)
