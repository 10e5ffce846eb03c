"""SOP 3, extend (paper A.3): the input's last frame → image-to-video → input + new frames.

The output keeps the input's size and frame rate, and its frames unchanged; the new frames are
resized and retimed to match (`storage.media.join_conformed`). A drift guard compares the input's
last frame with the first new frame (mean absolute difference, 0-255 pixel units) and warns or
fails above a tolerance.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from prefect import flow, get_run_logger

from flows.common import SopResult, ingest_inputs, open_run, publish
from flows.params import ProfileRef, Prompt, Refresh, Seed, Segments, Source, StoreUrl, WeightsRef
from flows.stages import animate
from configs.errors import MoraError
from tasks.artifacts import VideoArtifact
from tasks.generate import last_frame, seam_drift, splice
from tasks.review import ReviewPolicy

# Mean absolute difference, 0-255. Measured on the tiny profile (random weights, 64x64, seeds
# 0-4): 19.5-19.8 on a flat grey input, 48.1-48.4 on uniform noise, 51.8-52.3 on a colour
# gradient; two unrelated uniform-noise frames differ by ~85. 64 (a quarter of the range) passes
# every tiny run and flags a new segment about as unrelated to the input as noise is; real
# models that follow their conditioning frame should sit far below it.
DRIFT_TOLERANCE = 64.0


class DriftExceeded(MoraError):
    pass


class ExtendVideoResult(SopResult):
    new_clips: list[VideoArtifact]
    drift: float = Field(description="mean absolute difference, 0-255, between the input's "
                         "last frame and the first new frame")
    drift_tolerance: float
    drift_exceeded: bool


@flow(name="extend-video", log_prints=True)
def extend_video(
    video: Source,
    prompt: Prompt | None = None,
    segments: Segments = 1,
    drift: Literal["warn", "fail"] = "warn",
    drift_tolerance: Annotated[float, Field(ge=0, le=255)] = DRIFT_TOLERANCE,
    profile: ProfileRef = "tiny",
    store: StoreUrl | None = None,
    seed: Seed = 0,
    weights: WeightsRef | None = None,
    review: ReviewPolicy = ReviewPolicy(),
    refresh: Refresh = False,
) -> ExtendVideoResult:
    """SOP 3: last frame of the input video → image-to-video → input + new frames."""
    # 1. Resolve the profile and the store; enhance the prompt when there is one.
    prof, store_url, ctx, enhanced = open_run(profile, store, "extend-video", prompt, weights)

    # 2. The user's video into the store.
    source = ingest_inputs(store_url, ctx, video=(video, "video"))["video"]

    # 3. New clips from the input's last frame, reviewed.
    start = last_frame(store_url, ctx, source.video)
    clips = animate(prof, store_url, ctx, start, enhanced, seed, segments, review)

    # 4. Drift guard: does the new footage start where the input ends?
    measured = seam_drift(store_url, source.video, clips[0])
    exceeded = measured > drift_tolerance
    if exceeded:
        message = (f"extension drifts from the input: first new frame differs from the last "
                   f"input frame by {measured:.1f} (tolerance {drift_tolerance:g}, 0-255 units)")
        if drift == "fail":
            raise DriftExceeded(message)
        get_run_logger().warning(message)

    # 5. Input + new frames, at the input's size and fps; publish.
    drift_params = {"drift": round(measured, 3), "drift_tolerance": drift_tolerance}
    output = splice(store_url, ctx, [source.video, *clips], drift_params)
    return publish(ExtendVideoResult, store_url, ctx, output, [source], [start, *clips],
                   {"segments": segments, "seed": seed, **drift_params},
                   new_clips=clips, drift=measured, drift_tolerance=drift_tolerance,
                   drift_exceeded=exceeded)
