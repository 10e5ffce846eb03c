"""SOP 6, simulating digital worlds (paper A.3).

Either a prompt with the paper's phrase "in digital world style" appended, run through the
text-to-video stages, or a real video whose first frame is restyled by image-to-image and then
animated. Exactly one of the two.
"""

from __future__ import annotations

from prefect import flow

from flows.common import SopResult, ingest_inputs, open_run, publish, reviewed_edit
from flows.params import ProfileRef, Prompt, Refresh, Seed, Source, StoreUrl, WeightsRef
from flows.stages import animate, reviewed_first_frame
from configs.errors import MoraError
from tasks.generate import first_frame
from tasks.review import ReviewPolicy

STYLE_PHRASE = "in digital world style"  # paper A.3: 'In digital world style'
STYLE_INSTRUCTION = "transfer to digital world style, Minecraft-like voxel render"


def styled_prompt(prompt: str) -> str:
    return f"{' '.join(prompt.split()).rstrip(' .,;')} {STYLE_PHRASE}"


class DigitalWorldResult(SopResult):
    first_frame_key: str
    style: str


@flow(name="digital-world", log_prints=True)
def digital_world(
    prompt: Prompt | None = None,
    video: Source | None = None,
    profile: ProfileRef = "tiny",
    store: StoreUrl | None = None,
    seed: Seed = 0,
    weights: WeightsRef | None = None,
    review: ReviewPolicy = ReviewPolicy(),
    refresh: Refresh = False,
) -> DigitalWorldResult:
    """SOP 6: digital-world style (prompt suffix or image-to-image transfer) → image-to-video."""
    # 1. Exactly one of prompt and video; resolve the profile and the store.
    if (prompt is None) == (video is None):
        raise MoraError("digital world takes a prompt or a video, exactly one of them")
    text = styled_prompt(prompt) if prompt is not None else None
    prof, store_url, ctx, enhanced = open_run(profile, store, "digital-world", text, weights)

    # 2. The first frame: text-to-image of the styled prompt, or the video's first frame
    #    restyled by image-to-image; reviewed either way.
    inputs = ingest_inputs(store_url, ctx, video=(video, "video")) if video is not None else {}
    made: list[str] = []
    if prompt is not None:
        first = reviewed_first_frame(prof, store_url, ctx, enhanced, seed, review)
    else:
        made.append(first_frame(store_url, ctx, inputs["video"].video))
        first = reviewed_edit(prof, store_url, ctx, made[0], STYLE_INSTRUCTION, seed, review)

    # 3. Animate it, reviewed; publish.
    clip = animate(prof, store_url, ctx, first, enhanced, seed, 1, review)[0]
    style = STYLE_PHRASE if prompt is not None else STYLE_INSTRUCTION
    return publish(DigitalWorldResult, store_url, ctx, clip, list(inputs.values()),
                   [*made, first], {"style": style, "seed": seed},
                   first_frame_key=first, style=style)
