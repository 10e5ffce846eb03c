"""SOP 1, text-to-video (paper A.3): enhance → first frame → review → animate, segment by segment."""

from __future__ import annotations

from pydantic import BaseModel

from prefect import flow

from flows.common import open_profile
from flows.params import ProfileRef, Prompt, Refresh, Seed, Segments, StoreUrl, WeightsRef
from flows.stages import animate, reviewed_first_frame
from storage import open_store
from tasks.artifacts import RunContext, VideoArtifact
from tasks.generate import enhance_prompt, join_clips
from tasks.report import contact_sheet, publish_result
from tasks.review import ReviewPolicy


class TextToVideoResult(BaseModel):
    store: str
    video: VideoArtifact
    mp4_uri: str
    first_frame_key: str
    clips: list[VideoArtifact]
    preview_key: str
    prompt: str
    enhanced_prompt: str


@flow(name="text-to-video", log_prints=True)
def text_to_video(
    prompt: Prompt,
    segments: Segments = 1,
    profile: ProfileRef = "tiny",
    store: StoreUrl | None = None,
    seed: Seed = 0,
    weights: WeightsRef | None = None,
    review: ReviewPolicy = ReviewPolicy(),
    refresh: Refresh = False,
) -> TextToVideoResult:
    """SOP 1: prompt → enhanced → first frame → review → image-to-video, chained over segments."""
    # 1. Resolve the profile, the store and the weights (bad names and foreign checkpoints
    #    fail here, before any work).
    prof, store_url, keys = open_profile(profile, store, weights)

    # 2. Enhance the prompt.
    enhanced = enhance_prompt(prof, prompt)
    ctx = RunContext(sop="text-to-video", profile=prof.name, prompt=prompt,
                     enhanced_prompt=enhanced, weights=keys)

    # 3. The first frame, reviewed.
    first_frame = reviewed_first_frame(prof, store_url, ctx, enhanced, seed, review)

    # 4. Segments: each clip starts from the last frame of the one before.
    clips = animate(prof, store_url, ctx, first_frame, enhanced, seed, segments, review)

    # 5. Join the clips and publish the result on the run page.
    video = join_clips(store_url, ctx, clips)
    preview = contact_sheet(store_url, ctx, video)
    publish_result(store_url, ctx, video, preview, {"segments": segments, "seed": seed})
    uri = open_store(store_url).uri(video.mp4_key)
    print(f"text-to-video: {video.num_frames} frames → {uri}")
    return TextToVideoResult(
        store=store_url, video=video, mp4_uri=uri,
        first_frame_key=first_frame, clips=clips, preview_key=preview, prompt=prompt,
        enhanced_prompt=enhanced,
    )
