"""What the SOP flows beyond text-to-video share: their result, the reviewed stages
`flows.stages` does not have (an edited frame, a transition), and publishing.

Plain functions that call tasks (they run inside a flow); no model code here.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, Field

from configs import load_profile
from configs.schema import Profile
from flows.stages import review_loop
from storage import open_store
from tasks.artifacts import RunContext, VideoArtifact
from tasks.generate import connect, enhance_prompt, image_to_image
from tasks.inputs import InputArtifact, InputKind, ingest
from tasks.report import clip_preview, contact_sheet, image_preview, publish_result
from tasks.review import ReviewPolicy
from tasks.weights import apply_weights


class SopResult(BaseModel):
    """What every SOP flow returns: the output video, where it is, and what the run stored."""

    store: str
    video: VideoArtifact
    mp4_uri: str
    preview_key: str
    inputs: list[str] = Field(description="input artifact keys (the user's files as stored)")
    # Not `keys`: Prefect takes a model with a `keys` attribute for a mapping.
    artifact_keys: list[str] = Field(description="every artifact key the run stored, in order")
    prompt: str | None = None
    enhanced_prompt: str | None = None


def open_run(profile: str, store: str | None, sop: str, prompt: str | None = None,
             weights: str | None = None) -> tuple[Profile, str, RunContext, str | None]:
    """Resolve the profile, the store and the fine-tuned weights the run samples with (bad
    names and foreign checkpoints fail before any work), enhance the prompt: the profile, the
    store's URL, the run's provenance and the enhanced prompt (None without a prompt)."""
    prof, store_url, keys = open_profile(profile, store, weights)
    enhanced = enhance_prompt(prof, prompt) if prompt is not None else None
    return prof, store_url, RunContext(sop=sop, profile=prof.name, prompt=prompt,
                                       enhanced_prompt=enhanced, weights=keys), enhanced


def open_profile(profile: str, store: str | None,
                 weights: str | None = None) -> tuple[Profile, str, tuple[str, ...]]:
    """The profile with its weights references resolved and checked, the store's URL, and the
    checkpoint keys the run samples with (tasks/weights.py)."""
    store_url = open_store(store).url
    prof, keys = apply_weights(load_profile(profile), store_url, weights)
    return prof, store_url, keys


def ingest_inputs(store_url: str, ctx: RunContext,
                  **sources: tuple[str, InputKind]) -> dict[str, InputArtifact]:
    """Each named user file into the store as an input artifact: ``name=(source, kind)``."""
    return {name: ingest(store_url, ctx, source, kind, name)
            for name, (source, kind) in sources.items()}


def reviewed_edit(profile: Profile, store_url: str, ctx: RunContext, image_key: str,
                  instruction: str, seed: int, policy: ReviewPolicy) -> str:
    """Image-to-image of ``image_key`` as a first-frame stage: approve / regenerate / edit."""
    return review_loop(
        "first-frame", "first frame", policy,
        make=lambda attempt: image_to_image(profile, store_url, ctx, image_key, instruction,
                                            seed + attempt),
        preview=lambda key: image_preview(store_url, key, "first frame", policy.timeout_s),
        edit=lambda key, text: image_to_image(profile, store_url, ctx, key, text, seed))


def reviewed_transition(profile: Profile, store_url: str, ctx: RunContext,
                        before: VideoArtifact, after: VideoArtifact, prompt: str | None,
                        seed: int, policy: ReviewPolicy) -> VideoArtifact:
    """The connector's transition clip given ``prompt``: approve / regenerate (new seed)."""
    return review_loop(
        "transition", "transition", policy,
        make=lambda attempt: connect(profile, store_url, ctx, before, after, prompt,
                                     seed + attempt),
        preview=lambda clip: clip_preview(store_url, clip, "transition", policy.timeout_s))


def _keys(items: list[str | VideoArtifact | InputArtifact]) -> list[str]:
    keys: list[str] = []
    for item in items:
        if isinstance(item, VideoArtifact):
            keys += [item.frames_key, item.mp4_key]
        else:
            keys.append(item.key if isinstance(item, InputArtifact) else item)
    return list(dict.fromkeys(keys))


R = TypeVar("R", bound=SopResult)


def publish(result: type[R], store_url: str, ctx: RunContext, video: VideoArtifact,
            inputs: list[InputArtifact], made: list[str | VideoArtifact],
            extra: dict[str, object], **fields) -> R:
    """Preview and result artifact on the run page, then the flow's result."""
    preview = contact_sheet(store_url, ctx, video)
    publish_result(store_url, ctx, video, preview,
                   {"inputs": ", ".join(f"`{i.key}` ← {i.source}" for i in inputs), **extra})
    uri = open_store(store_url).uri(video.mp4_key)
    print(f"{ctx.sop}: {video.num_frames} frames, {video.width}x{video.height} "
          f"@ {video.fps:g} fps → {uri}")
    return result(store=store_url, video=video, mp4_uri=uri, preview_key=preview,
                  inputs=[i.key for i in inputs],
                  artifact_keys=_keys([*inputs, *made, video, preview]),
                  prompt=ctx.prompt, enhanced_prompt=ctx.enhanced_prompt, **fields)
