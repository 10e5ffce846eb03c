"""SOP 2, image-to-video (paper A.3): the user's image (+ prompt) → optional edit → animate."""

from __future__ import annotations

from prefect import flow

from flows.common import SopResult, ingest_inputs, open_run, publish, reviewed_edit
from flows.params import ProfileRef, Prompt, Refresh, Seed, Source, StoreUrl, WeightsRef
from flows.stages import animate
from tasks.review import ReviewPolicy


class ImageToVideoResult(SopResult):
    first_frame_key: str
    edit_instruction: str | None = None


@flow(name="image-to-video", log_prints=True)
def image_to_video(
    image: Source,
    prompt: Prompt | None = None,
    edit_instruction: Prompt | None = None,
    profile: ProfileRef = "tiny",
    store: StoreUrl | None = None,
    seed: Seed = 0,
    weights: WeightsRef | None = None,
    review: ReviewPolicy = ReviewPolicy(),
    refresh: Refresh = False,
) -> ImageToVideoResult:
    """SOP 2: user image (+ prompt) → optional image-to-image → image-to-video."""
    # 1. Resolve the profile and the store; enhance the prompt when there is one.
    prof, store_url, ctx, enhanced = open_run(profile, store, "image-to-video", prompt, weights)

    # 2. The user's image into the store: the input every output names as its origin.
    inputs = ingest_inputs(store_url, ctx, image=(image, "image"))

    # 3. The first frame: the user's image as it is, or edited by instruction and reviewed.
    first = inputs["image"].key
    if edit_instruction is not None:
        first = reviewed_edit(prof, store_url, ctx, first, edit_instruction, seed, review)

    # 4. Animate it, reviewed.
    clips = animate(prof, store_url, ctx, first, enhanced, seed, 1, review)

    # 5. Publish the result on the run page.
    return publish(ImageToVideoResult, store_url, ctx, clips[0], list(inputs.values()),
                   [first], {"edit instruction": edit_instruction, "seed": seed},
                   first_frame_key=first, edit_instruction=edit_instruction)
