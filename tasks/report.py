"""What a run shows on its Prefect page: previews for reviewers and a result artifact."""

from __future__ import annotations

import time

from prefect import task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE

from storage import open_store
from storage import media
from tasks.artifacts import (RunContext, VideoArtifact, load_frames, load_image, provenance,
                            save_image)


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


LINK_MARGIN_S = 60  # a link made just before a pause starts still works when the pause ends
_TEXT_ROOM = 8_000  # of PREVIEW_MAX_BYTES, kept for a description's words and links


def _data_uri(data: bytes, mime: str) -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _inline(frames, fps: float | None, title: str, budget: int, tiles_across: int = 1) -> str:
    """An inline picture (markdown) or a playing clip (a raw <video>, which the Prefect UI's
    markdown renders) of at most ``budget`` characters."""
    return _markup(media.fit_preview(frames, fps, budget, tiles_across), title, budget)


def _markup(fitted: tuple[bytes, str] | None, title: str, budget: int) -> str:
    if fitted is None:
        return f"*(no inline preview of {title}: it would exceed {budget} bytes)*"
    uri = _data_uri(*fitted)
    if fitted[1].startswith("image/"):
        return f"![{title}]({uri})"
    return (f'<video src="{uri}" title="{title}" autoplay loop muted controls playsinline>'
            "</video>")


def _location(store, key: str, expires_s: int) -> str:
    """Where the full-size artifact is: its URI, and on S3 a presigned link valid for the
    pause (``expires_s``; 0 for none: a result artifact outlives any pause)."""
    link = store.share_url(key, expires_s + LINK_MARGIN_S) if expires_s else None
    return f"[full size]({link}) · `{store.uri(key)}`" if link else f"`{store.uri(key)}`"


def image_preview(store_url: str, key: str, title: str, expires_s: int = 0,
                  budget: int = media.PREVIEW_MAX_BYTES - _TEXT_ROOM) -> str:
    """A stored image as a reviewer sees it: small inline, and where the full size is."""
    store = open_store(store_url)
    frames = media.images_to_array([load_image(store, key)])
    return f"{_inline(frames, None, title, budget)}\n\n**{title}**: {_location(store, key, expires_s)}"


def clip_preview(store_url: str, video: VideoArtifact, title: str, expires_s: int = 0,
                 budget: int = media.PREVIEW_MAX_BYTES - _TEXT_ROOM) -> str:
    """A stored clip playing inline (short, small), and where its mp4 is."""
    store = open_store(store_url)
    # A small clip's stored mp4 is byte for byte what the preview would encode
    # (media.is_own_preview): read it instead of decoding the frames and running ffmpeg again,
    # which was most of a small run's result artifact (benchmarks/README.md, P1).
    own = (store.get_bytes(video.mp4_key)
           if media.is_own_preview(video.num_frames, video.height, video.width) else None)
    if own is not None and media.fits_budget(own, budget):
        inline = _markup((own, "video/mp4"), title, budget)
    else:
        frames, fps = load_frames(store, video.frames_key)
        inline = _inline(frames, fps, title, budget)
    return (f"{inline}\n\n"
            f"**{title}** ({video.num_frames} frames, {video.width}x{video.height} @ "
            f"{video.fps:g} fps): {_location(store, video.mp4_key, expires_s)}")


def clips_preview(store_url: str, videos: list[VideoArtifact], title: str, expires_s: int = 0,
                  budget: int = media.PREVIEW_MAX_BYTES - _TEXT_ROOM) -> str:
    """Several clips playing side by side as one tiled clip, numbered 1..n in their corners,
    and a numbered list of where each mp4 is."""
    store = open_store(store_url)
    loaded = [load_frames(store, v.frames_key) for v in videos]
    tiled = media.tile_clips([frames for frames, _ in loaded])
    links = "\n".join(f"{i}. {_location(store, v.mp4_key, expires_s)}"
                      for i, v in enumerate(videos, 1))
    across = media.tile_columns(len(videos))
    return f"{_inline(tiled, loaded[0][1], title, budget, across)}\n\n**{title}**:\n\n{links}"


def _made(prov) -> str:
    """Whether this run made the video or reused it from the cache (tasks/cache.py)."""
    from prefect.runtime import flow_run

    if prov.flow_run_id == flow_run.id:
        return "in this run"
    return (f"reused from the cache: made by flow run {prov.flow_run_id} at "
            f"{prov.created_at:%Y-%m-%d %H:%M:%S} UTC")


# The markdown it returns is for tests and scripts; nobody reads it back from a persisted
# result, and hashing its inputs for a cache key (the default policy) buys nothing: each run
# publishes its own page.
@task(name="publish-result", cache_policy=NO_CACHE, persist_result=False)
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
        _row("made", _made(prov)),
        _row("parents", ", ".join(f"`{p}`" for p in prov.parents)),
    ]
    rows += [_row(k, v) for k, v in (extra or {}).items()]
    budget = (media.PREVIEW_MAX_BYTES - _TEXT_ROOM) // 2
    markdown = "\n".join([f"## {ctx.sop}", "", clip_preview(store_url, video, "result", 0, budget),
                          "", image_preview(store_url, preview_key, "contact sheet", 0, budget),
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
    """A progress artifact on the run page for work done segment by segment.

    Like ``StepProgress``, throttled (an API call each): a segment finished within ``every``
    seconds of the last one shown is not shown, the last segment always is, so the run page
    ends at "N of N" and a quick run makes one call, not one per segment plus one to start."""

    def __init__(self, sop: str, total: int, every: float | None = None):
        self.sop, self.total = sop, total
        self.every = STEP_PROGRESS_EVERY_S if every is None else every
        self.artifact_id = None
        self.shown = time.monotonic()

    def done(self, finished: int) -> None:
        now = time.monotonic()
        if finished < self.total and now - self.shown < self.every:
            return
        self.shown = now
        progress, description = 100.0 * finished / self.total, self._say(finished)
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(progress=progress,
                                                        description=description)
        else:
            update_progress_artifact(self.artifact_id, progress=progress,
                                     description=description)

    def _say(self, finished: int) -> str:
        return f"{self.sop}: {finished} of {self.total} segment(s) generated"
