"""What the SOP flows beyond text-to-video share: their parameters' types, their result, the
reviewed stages `flows.stages` does not have (an edited frame, a transition), and publishing.

Plain functions that call tasks (they run inside a flow); no model code here.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, Field

from configs import load_profile
from configs.schema import WEIGHTS_REF_PATTERN, Profile
from flows.stages import animate, review_loop
from configs.errors import MoraError
from storage import open_store
from storage.factory import parse_store_url
from tasks.artifacts import RunContext, VideoArtifact
from tasks.generate import connect, enhance_prompt, image_to_image
from tasks.inputs import InputArtifact, InputKind, ingest
from tasks.report import clip_preview, contact_sheet, image_preview, publish_result
from tasks.review import ReviewPolicy
from tasks.weights import apply_weights

# Flow parameters are validated (by Prefect, with pydantic) before a run starts: a bad value
# fails there, naming the parameter, whether the flow is called from Python, the CLI or a
# deployment. Validators raise ValueError so pydantic reports them as validation errors.


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("is blank")
    if any(ord(c) < 32 and c not in "\t\n" or ord(c) == 0x7F for c in value):
        raise ValueError("contains control characters")
    return value


def _source(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 0x7F for c in value):
        raise ValueError("contains control characters")
    return value


def _checked_by(check):
    """A validator that keeps the value if ``check(value)`` passes, its MoraError otherwise."""
    def validate(value: str) -> str:
        try:
            check(value)
        except MoraError as exc:
            raise ValueError(str(exc)) from None
        return value

    return validate


_store_url = _checked_by(parse_store_url)
_profile_ref = _checked_by(load_profile)


Source = Annotated[str, Field(min_length=1, max_length=4096, description="a local file path, "
                              "store://<key> for an artifact already in the store, or "
                              "s3://bucket/key for an object the store's credentials read"),
                   AfterValidator(_source)]
Prompt = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_text)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
Segments = Annotated[int, Field(ge=1, le=32, description="clips, each from the previous clip's "
                                "last frame")]
ProfileRef = Annotated[str, Field(min_length=1, max_length=4096, description="a profile name "
                                  "(configs/profiles) or a YAML path"),
                       AfterValidator(_profile_ref)]
StoreUrl = Annotated[str, Field(max_length=4096, description="a folder, file:///path or "
                                "s3://bucket/prefix"), AfterValidator(_store_url)]
WeightsRef = Annotated[str, Field(max_length=1000, pattern=WEIGHTS_REF_PATTERN,
                                  description="fine-tuned weights to sample with: "
                                  "round:<round id>, store://<key> or latest (of the store); "
                                  "base: the profile's base weights")]


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
             weights: str | None = None) -> tuple[Profile, str, RunContext]:
    """Resolve the profile, the store and the fine-tuned weights the run samples with (bad
    names and foreign checkpoints fail before any work), enhance the prompt."""
    prof, store_url, keys = open_profile(profile, store, weights)
    enhanced = enhance_prompt(prof, prompt) if prompt is not None else None
    return prof, store_url, RunContext(sop=sop, profile=prof.name, prompt=prompt,
                                       enhanced_prompt=enhanced, weights=keys)


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
                        before: VideoArtifact, after: VideoArtifact, seed: int,
                        policy: ReviewPolicy) -> VideoArtifact:
    """The connector's transition clip: approve / regenerate (new seed)."""
    return review_loop(
        "transition", "transition", policy,
        make=lambda attempt: connect(profile, store_url, ctx, before, after, seed + attempt),
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
