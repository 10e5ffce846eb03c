"""Reviewed stages shared by the SOP flows: generate, ask, and redo until approved.

Plain functions that call tasks (they run inside a flow); no model code here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from configs.schema import Profile
from configs.errors import MoraError
from tasks.artifacts import RunContext, VideoArtifact
from tasks.generate import image_to_image, image_to_video, last_frame, text_to_image
from tasks.report import SegmentProgress, clip_preview, image_preview
from tasks.review import ReviewPolicy, reviewer

T = TypeVar("T")


class ReviewLimitReached(MoraError):
    pass


def review_loop(stage: str, label: str, policy: ReviewPolicy, make: Callable[[int], T],
                preview: Callable[[T], str], edit: Callable[[T, str], T] | None = None) -> T:
    """make(0) → review → approve, regenerate (make(attempt)) or edit, at most max_tries times."""
    review = reviewer(policy)
    result = make(0)
    for attempt in range(1, policy.max_tries + 1):
        decision = review(stage, attempt, preview(result) if policy.mode == "ask" else "", policy)
        if decision.action == "approve":
            return result
        if attempt == policy.max_tries:
            break
        if decision.action == "edit" and edit is not None:
            result = edit(result, decision.instruction)
        else:
            result = make(attempt)
    raise ReviewLimitReached(f"{label} was not approved after {policy.max_tries} tries; stopping")


def reviewed_first_frame(profile: Profile, store_url: str, ctx: RunContext, prompt: str,
                         seed: int, policy: ReviewPolicy) -> str:
    """Text-to-image of ``prompt``, then approve / regenerate (new seed) / edit
    (image-to-image)."""
    return review_loop(
        "first-frame", "first frame", policy,
        make=lambda attempt: text_to_image(profile, store_url, ctx, prompt, seed + attempt),
        preview=lambda key: image_preview(store_url, key, "first frame", policy.timeout_s),
        edit=lambda key, text: image_to_image(profile, store_url, ctx, key, text, seed))


def reviewed_clip(profile: Profile, store_url: str, ctx: RunContext, image_key: str,
                  prompt: str | None, seed: int, segment: int, policy: ReviewPolicy,
                  instruction: str | None = None) -> VideoArtifact:
    """Image-to-video given ``prompt`` (else ``instruction``: tasks/generate.py `video_text`),
    then approve / regenerate (new seed); edit applies to first frames only."""
    return review_loop(
        f"segment-{segment + 1}", f"segment {segment + 1}", policy,
        make=lambda attempt: image_to_video(profile, store_url, ctx, image_key, prompt,
                                            seed + attempt, segment, instruction),
        preview=lambda clip: clip_preview(store_url, clip, f"segment {segment + 1}",
                                          policy.timeout_s))


def animate(profile: Profile, store_url: str, ctx: RunContext, start_key: str,
            prompt: str | None, seed: int, segments: int, policy: ReviewPolicy,
            instruction: str | None = None) -> list[VideoArtifact]:
    """Reviewed clips from ``start_key`` given ``prompt`` (else ``instruction``), each next one
    from the previous clip's last frame."""
    clips: list[VideoArtifact] = []
    progress = SegmentProgress(ctx.sop, segments)
    for segment in range(segments):
        clips.append(reviewed_clip(profile, store_url, ctx, start_key, prompt,
                                   seed + 1000 * segment, segment, policy, instruction))
        progress.done(segment + 1)
        if segment + 1 < segments:
            start_key = last_frame(store_url, ctx, clips[-1])
    return clips
