"""What every judge shares: the paper's ten criteria, the ``Judgement`` a judge answers with,
and the candidate videos' checks, digests and frames (agents/judges/__init__.py)."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from configs.errors import MoraError


#: The paper's evaluation criteria (A.6, Table 3 "Prompt No. | Evaluation Criteria"), verbatim.
CRITERIA: dict[int, str] = {
    1: "Evaluate the visual clarity and resolution, ranking videos based on image sharpness, smoothness of "
       "transitions, and noise levels.",
    2: "Assess object consistency and scene stability across frames, ranking videos on object motion and "
       "interactions.",
    3: "Examine the temporal coherence, identifying the best frame-to-frame continuity.",
    4: "Evaluate the narrative coherence or logical progression, ranking based on storytelling consistency.",
    5: "Assess color grading and lighting consistency, determining the best video based on smooth lighting "
       "transitions and uniform color.",
    6: "Evaluate the realism of objects, background textures, and scene complexity, ranking videos from most "
       "realistic to least.",
    7: "Analyze content relevance to the task, ranking videos based on theme alignment and task appropriateness.",
    8: "Compare the aesthetic quality, focusing on artistic composition, balance, and overall visual appeal.",
    9: "Evaluate noise and artifact levels, identifying the video with the cleanest and smoothest output.",
    10: "Examine frame rate consistency and smoothness of motion, ranking videos based on natural motion without "
        "lag or stuttering.",
}


def criterion_text(criterion_id: int) -> str:
    """The text of criterion ``criterion_id`` (1..10); MoraError for anything else."""
    if isinstance(criterion_id, bool) or not isinstance(criterion_id, (int, np.integer)) \
            or int(criterion_id) not in CRITERIA:
        raise MoraError(f"criterion must be an integer from 1 to {len(CRITERIA)}, got {criterion_id!r}")
    return CRITERIA[int(criterion_id)]


def draw_criterion(rng: Any) -> int:
    """A criterion id drawn uniformly with ``rng`` (``random.Random`` or ``numpy.random.Generator``)."""
    ids = sorted(CRITERIA)
    if hasattr(rng, "integers"):
        return ids[int(rng.integers(len(ids)))]
    return ids[rng.randrange(len(ids))]


class Judgement(BaseModel):
    """One judge's answer for one candidate set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str
    backend: str
    criterion_id: int
    criterion: str
    raw: str
    ranking: list[int] | None
    scores: list[float] | None = None

    @property
    def best(self) -> int | None:
        """The index of the candidate this judge ranked first (None without a ranking)."""
        return self.ranking[0] if self.ranking else None






def check_candidates(candidates: Any) -> list[np.ndarray]:
    """A non-empty list of ``T x H x W x 3`` uint8 videos; MoraError naming the bad one."""
    from metrics.base import check_frames

    if isinstance(candidates, np.ndarray) and candidates.ndim == 5:
        candidates = list(candidates)
    if not isinstance(candidates, (list, tuple)) or not candidates:
        raise MoraError("judges need a non-empty list of candidate videos")
    out = []
    for i, video in enumerate(candidates):
        try:
            out.append(check_frames(video, name=f"candidate {i + 1}"))
        except ValueError as exc:
            raise MoraError(str(exc)) from None
    return out


def video_digest(frames: np.ndarray) -> str:
    """A content hash of a frame array (shape, dtype and bytes)."""
    frames = np.ascontiguousarray(frames)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{frames.shape}|{frames.dtype.str}|".encode())
    h.update(memoryview(frames).cast("B"))
    return h.hexdigest()


def sample_frame_indices(num_frames: int, k: int) -> list[int]:
    """``min(k, num_frames)`` evenly spaced frame indices, first and last included."""
    k = max(1, min(k, num_frames))
    if k == 1:
        return [0]
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, k)})


def frames_as_images(frames: np.ndarray, k: int, max_side: int | None):
    """``k`` evenly spaced frames as RGB PIL images, downscaled to ``max_side`` on the longer side."""
    from PIL import Image

    images = []
    for i in sample_frame_indices(frames.shape[0], k):
        image = Image.fromarray(frames[i])
        if max_side is not None and max(image.size) > max_side:
            scale = max_side / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC)
        images.append(image)
    return images


def png_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
