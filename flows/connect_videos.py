"""SOP 5, connect (paper A.3): a transition from A's last frame to B's first → A + transition + B.

Inputs of different size or frame rate are conformed, not rejected: the output has A's size and
fps with A's frames unchanged; the transition and B are resized to A's size and retimed to A's
fps (nearest frame, so each keeps its duration).
"""

from __future__ import annotations

from prefect import flow

from flows.common import SopResult, ingest_inputs, open_run, publish, reviewed_transition
from flows.params import ProfileRef, Prompt, Refresh, Seed, Source, StoreUrl, WeightsRef
from tasks.artifacts import VideoArtifact
from tasks.generate import seam_drift, splice
from tasks.review import ReviewPolicy


class ConnectVideosResult(SopResult):
    transition: VideoArtifact
    seams: list[float]


@flow(name="connect-videos", log_prints=True)
def connect_videos(
    video_a: Source,
    video_b: Source,
    prompt: Prompt | None = None,
    profile: ProfileRef = "tiny",
    store: StoreUrl | None = None,
    seed: Seed = 0,
    weights: WeightsRef | None = None,
    review: ReviewPolicy = ReviewPolicy(),
    refresh: Refresh = False,
) -> ConnectVideosResult:
    """SOP 5: connector(A's last frame, B's first frame) → A + transition + B."""
    # 1. Resolve the profile and the store; enhance the prompt when there is one.
    prof, store_url, ctx, enhanced = open_run(profile, store, "connect-videos", prompt, weights)

    # 2. Both videos into the store.
    inputs = ingest_inputs(store_url, ctx, video_a=(video_a, "video"), video_b=(video_b, "video"))
    a, b = inputs["video_a"].video, inputs["video_b"].video

    # 3. The transition from A's last frame to B's first, reviewed.
    transition = reviewed_transition(prof, store_url, ctx, a, b, enhanced, seed, review)

    # 4. How well the joins line up (0-255, recorded), then A + transition + B at A's size and fps.
    seams = [seam_drift(store_url, a, transition), seam_drift(store_url, transition, b)]
    output = splice(store_url, ctx, [a, transition, b], {"seams": seams})

    # 5. Publish.
    return publish(ConnectVideosResult, store_url, ctx, output, list(inputs.values()),
                   [transition], {"seams": seams, "seed": seed},
                   transition=transition, seams=seams)
