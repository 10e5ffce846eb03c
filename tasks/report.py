"""What a run shows on its Prefect page: previews for reviewers and a result artifact."""

from __future__ import annotations

import time

from prefect import task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact,
                               update_progress_artifact)

from storage import open_store
from tasks import media
from tasks.artifacts import RunContext, VideoArtifact, load_frames, provenance, save_image


def _row(name: str, value: object) -> str:
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return f"| {name} | {text} |"


@task(name="contact-sheet")
def contact_sheet(store_url: str, ctx: RunContext, video: VideoArtifact) -> str:
    """A grid of evenly spaced frames: a video's preview as one image."""
    store = open_store(store_url)
    frames, _ = load_frames(store, video.frames_key)
    return save_image(store, media.contact_sheet(frames),
                      provenance("preview", ctx, parents=[video.frames_key], stage="preview"))


def image_markdown(store_url: str, key: str, title: str) -> str:
    store = open_store(store_url)
    link = store.uri(key)
    shown = f"![{title}]({link})\n\n" if link.startswith(("http://", "https://")) else ""
    return f"{shown}**{title}**: `{link}`"


@task(name="publish-result")
def publish_result(store_url: str, ctx: RunContext, video: VideoArtifact, preview_key: str,
                   extra: dict[str, object] | None = None) -> str:
    """A markdown artifact on the run page: the preview, where the video is, its provenance."""
    store = open_store(store_url)
    prov = store.read_provenance(video.mp4_key)
    rows = [
        _row("video (mp4)", f"`{store.uri(video.mp4_key)}`"),
        _row("frames (lossless)", f"`{video.frames_key}`"),
        _row("frames × size @ fps", f"{video.num_frames} × {video.width}x{video.height} @ {video.fps:g}"),
        _row("SOP", ctx.sop), _row("profile", ctx.profile), _row("prompt", ctx.prompt),
        _row("enhanced prompt", ctx.enhanced_prompt), _row("flow run", prov.flow_run_id),
        _row("parents", ", ".join(f"`{p}`" for p in prov.parents)),
    ]
    rows += [_row(k, v) for k, v in (extra or {}).items()]
    markdown = "\n".join([f"## {ctx.sop}", "", image_markdown(store_url, preview_key, "contact sheet"),
                          "", "| field | value |", "|---|---|", *rows])
    create_markdown_artifact(markdown=markdown, key=f"{ctx.sop}-result",
                             description=f"{ctx.sop} output")
    return markdown


STEP_PROGRESS_EVERY_S = 1.0


class StepProgress:
    """Denoising-step progress of a task's pipeline calls on the run page: a progress artifact
    per stage, created once the stage has run ``every`` seconds and updated at most every
    ``every`` seconds (an API call each), so short stages cost no call at all."""

    def __init__(self, every: float | None = None):
        self.every = STEP_PROGRESS_EVERY_S if every is None else every
        self.stage: str | None = None
        self.artifact_id = None
        self.started = self.shown = 0.0

    def __call__(self, stage: str, step: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:  # a new pipeline call
            self.stage, self.artifact_id, self.started = stage, None, now
        if now - max(self.started, self.shown) < self.every:
            return
        self.shown = now
        description = f"{stage}: denoising step {step} of {total}"
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(progress=100.0 * step / total,
                                                        description=description)
        else:
            update_progress_artifact(self.artifact_id, progress=100.0 * step / total,
                                     description=description)


class SegmentProgress:
    """A progress artifact on the run page for work done segment by segment."""

    def __init__(self, sop: str, total: int):
        self.sop, self.total = sop, total
        self.artifact_id = create_progress_artifact(progress=0.0, description=self._say(0))

    def done(self, finished: int) -> None:
        update_progress_artifact(self.artifact_id, progress=100.0 * finished / self.total,
                                 description=self._say(finished))

    def _say(self, finished: int) -> str:
        return f"{self.sop}: {finished} of {self.total} segment(s) generated"
