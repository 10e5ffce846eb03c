"""Reviewed stages shared by the SOP flows: generate, ask, and redo until approved.

Plain functions that call tasks (they run inside a flow); no model code here.
"""

from __future__ import annotations

from configs.schema import Profile
from mora.errors import MoraError
from tasks.artifacts import RunContext, VideoArtifact
from tasks.generate import image_to_image, image_to_video, text_to_image
from tasks.report import contact_sheet, image_markdown
from tasks.review import ReviewPolicy, reviewer


class ReviewLimitReached(MoraError):
    pass


def _limit(stage: str, policy: ReviewPolicy) -> ReviewLimitReached:
    return ReviewLimitReached(f"{stage} was not approved after {policy.max_tries} tries; stopping")


def reviewed_first_frame(profile: Profile, store_url: str, ctx: RunContext, seed: int,
                         policy: ReviewPolicy) -> str:
    """Text-to-image, then approve / regenerate (new seed) / edit (image-to-image)."""
    review = reviewer(policy)
    key = text_to_image(profile, store_url, ctx, seed)
    for attempt in range(1, policy.max_tries + 1):
        decision = review("first-frame", attempt, image_markdown(store_url, key, "first frame"),
                          policy)
        if decision.action == "approve":
            return key
        if attempt == policy.max_tries:
            break
        if decision.action == "regenerate":
            key = text_to_image(profile, store_url, ctx, seed + attempt)
        else:
            key = image_to_image(profile, store_url, ctx, key, decision.instruction, seed)
    raise _limit("first frame", policy)


def reviewed_clip(profile: Profile, store_url: str, ctx: RunContext, image_key: str, seed: int,
                  segment: int, policy: ReviewPolicy) -> VideoArtifact:
    """Image-to-video, then approve / regenerate (new seed); edit applies to first frames only."""
    review = reviewer(policy)
    clip = image_to_video(profile, store_url, ctx, image_key, seed, segment)
    for attempt in range(1, policy.max_tries + 1):
        preview = ""
        if policy.mode == "ask":
            preview = image_markdown(store_url, contact_sheet(store_url, ctx, clip),
                                     f"segment {segment + 1}")
        decision = review(f"segment-{segment + 1}", attempt, preview, policy)
        if decision.action == "approve":
            return clip
        if attempt == policy.max_tries:
            break
        clip = image_to_video(profile, store_url, ctx, image_key, seed + attempt, segment)
    raise _limit(f"segment {segment + 1}", policy)
