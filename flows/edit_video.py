"""SOP 4, video-to-video edit (paper A.3): edit the input's first frame by instruction → animate.

The output is a new clip from the edited frame, at the profile's size, length and frame rate.
"""

from __future__ import annotations

from prefect import flow

from flows.common import SopResult, ingest_inputs, open_run, publish, reviewed_edit
from flows.params import ProfileRef, Prompt, Refresh, Seed, Source, StoreUrl, WeightsRef
from flows.stages import animate
from tasks.generate import first_frame
from tasks.review import ReviewPolicy


class EditVideoResult(SopResult):
    first_frame_key: str
    instruction: str


@flow(name="edit-video", log_prints=True)
def edit_video(
    video: Source,
    instruction: Prompt,
    prompt: Prompt | None = None,
    profile: ProfileRef = "tiny",
    store: StoreUrl | None = None,
    seed: Seed = 0,
    weights: WeightsRef | None = None,
    review: ReviewPolicy = ReviewPolicy(),
    refresh: Refresh = False,
) -> EditVideoResult:
    """SOP 4: image-to-image on the first frame by instruction → image-to-video."""
    # 1. Resolve the profile and the store; enhance the prompt when there is one.
    prof, store_url, ctx, enhanced = open_run(profile, store, "edit-video", prompt, weights)

    # 2. The user's video into the store.
    source = ingest_inputs(store_url, ctx, video=(video, "video"))["video"]

    # 3. Its first frame, edited by the instruction and reviewed.
    original = first_frame(store_url, ctx, source.video)
    edited = reviewed_edit(prof, store_url, ctx, original, instruction, seed, review)

    # 4. Animate the edited frame, reviewed; publish.
    # Without a prompt, the video model is given the instruction.
    clip = animate(prof, store_url, ctx, edited, enhanced, seed, 1, review, instruction)[0]
    return publish(EditVideoResult, store_url, ctx, clip, [source], [original, edited],
                   {"instruction": instruction, "seed": seed},
                   first_frame_key=edited, instruction=instruction)
