"""Prefect tasks over the generation agents: cached on their inputs, retried, tagged for GPUs.

Each task loads its agent from the worker's model cache, runs it, writes the result to the
store with provenance and returns store keys (small, cheap to persist as task results).
A rerun with the same inputs is served from Prefect's result cache and generates nothing.

Tasks take the store's URL and open the store themselves (opening is cheap: nothing is
contacted) rather than a ``Store`` object: Prefect's INPUTS cache key hashes the parameters as
JSON and falls back to cloudpickle for the whole set when one is not JSON (a Store is not),
and the pickled pydantic models then hash differently in every process, so a rerun in a new
process would miss the cache.
"""

from __future__ import annotations

from prefect import task

from agents.registry import agents_for
from configs.schema import Profile
from configs.errors import MoraError
from storage import open_store
from storage import media
from tasks.cache import CACHED
from tasks.artifacts import (RunContext, VideoArtifact, load_frames, load_image, provenance,
                             save_image, save_video)
from tasks.weights import agents_with_weights


def _transient(task, task_run, state) -> bool:
    """Retry infrastructure hiccups, never bad input."""
    try:
        state.result()
    except MoraError:
        return False
    except Exception:
        return True
    return False


# No task carries Prefect tags. For every tagged task run Prefect takes tag concurrency slots;
# with no limit on the tags the client remembers "no limit" for 5 s only
# (prefect/concurrency/services.py `_no_limits_cache`), and the refresh is a write transaction
# that the local SQLite server answers with 503 when its database is busy; the client then
# retries after 2 s. Measured: one warm text-to-video run in three stalled 1.8-2.3 s
# (benchmarks/README.md, P1). A GPU is guarded by MORA_GPU_LIMIT instead (`on_gpu` below).
ON_GPU = dict(CACHED, retries=1, retry_delay_seconds=10, retry_condition_fn=_transient)


def on_gpu(fn):
    """Run ``fn`` holding a slot of the worker's GPU concurrency limit (``MORA_GPU_LIMIT``).

    The limit is taken with ``strict=True``: a worker configured for a limit that does not
    exist on the server fails the task, rather than running unguarded."""
    import functools

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        from contextlib import ExitStack

        from agents.progress import listening
        from configs.settings import gpu_concurrency_limit
        from tasks.report import StepProgress

        with ExitStack() as slot:
            slot.enter_context(listening(StepProgress()))
            if name := gpu_concurrency_limit():
                from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
                from prefect.concurrency.sync import concurrency

                try:
                    slot.enter_context(concurrency(name, occupy=1, strict=True))
                except ConcurrencySlotAcquisitionError:
                    raise MoraError(f"GPU concurrency limit '{name}' (MORA_GPU_LIMIT) does not "
                                    f"exist on the server: prefect gcl create {name} --limit 1"
                                    ) from None
            return fn(*args, **kwargs)

    return guarded


class GpuTask:
    """A GPU task as the flows call it: run here, or (``MORA_GPU_TASKS=task-workers``) handed
    to a long-lived ``mora worker`` process through Prefect's background tasks (``.delay()``),
    where the models stay loaded from one flow run to the next.

    The flow waits for the result (a persisted task result, read back from the shared result
    storage). A worker that dies mid-task never reports back: after ``MORA_GPU_TASK_TIMEOUT_S``
    the task is handed out once more, to whichever worker is free (a finished one comes back
    from the task cache); a review pause stays in the flow's own process."""

    def __init__(self, task):
        self.task = task

    def __getattr__(self, name):
        return getattr(self.task, name)

    def __call__(self, *args, **kwargs):
        from configs.settings import gpu_task_timeout_s, gpu_tasks_engine

        if gpu_tasks_engine() == "inline":
            return self.task(*args, **kwargs)
        timeout = gpu_task_timeout_s()
        for attempt in (1, 2):
            future = self.task.delay(*args, **kwargs)
            future.wait(timeout=timeout)
            if future.state.is_final():
                return future.result()
        raise MoraError(f"no mora worker finished task {self.task.name} within {timeout:g} s "
                        "(twice): start one per GPU with `mora worker`, or raise "
                        "MORA_GPU_TASK_TIMEOUT_S")
_SAID: set[tuple] = set()  # (flow run, note): what video_text already logged


def _run_logger():
    """The run's logger; a plain one where a task body is called outside any run (as
    benchmarks/bench_t2v_overhead.py does to time the work without Prefect)."""
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("mora")


def video_text(agent, prompt: str | None,
               instruction: str | None = None) -> tuple[str | None, dict]:
    """The text a video agent is called with — the (enhanced) prompt, an edit's instruction,
    else the agent's stated default (none for models without text, e.g. SVD) — and the
    provenance fields that record it. Where that is not the user's prompt, the run's log says
    so once."""
    from prefect.runtime import flow_run

    text, note = agent.text_for(prompt or instruction)
    if prompt is None and text is not None and text == instruction:
        note = f"no prompt: {agent.spec.pipeline} is given the edit instruction {text!r}"
    said = {"video_text": text}
    if note is not None:
        said["video_text_note"] = note
        if (flow_run.id, note) not in _SAID:
            _SAID.add((flow_run.id, note))
            _run_logger().info(note)  # a fact of the model, not a fault: SVD has no text input
    return text, said


@task(name="enhance-prompt", retries=2, retry_delay_seconds=5,
      retry_condition_fn=_transient, **CACHED)
def enhance_prompt(profile: Profile, prompt: str) -> str:
    return agents_for(profile).enhancer.enhance(prompt)


@task(name="text-to-image", **ON_GPU)
@on_gpu
def _text_to_image(profile: Profile, store_url: str, ctx: RunContext, prompt: str,
                   seed: int) -> str:
    """The first frame of ``prompt`` (the enhanced prompt; ``ctx`` records both)."""
    agent = agents_with_weights(profile, store_url).text_to_image
    image = agent(prompt, seed)
    store = open_store(store_url)
    return save_image(store, image, provenance("image", ctx, seed, [agent.model_ref],
                                               stage="first_frame"))


@task(name="image-to-image", **ON_GPU)
@on_gpu
def _image_to_image(profile: Profile, store_url: str, ctx: RunContext, image_key: str,
                   instruction: str, seed: int) -> str:
    agent = agents_for(profile).image_to_image
    store = open_store(store_url)
    image = agent(load_image(store, image_key), instruction, seed)
    return save_image(store, image, provenance("image", ctx, seed, [agent.model_ref],
                                               [image_key], stage="edit",
                                               instruction=instruction))


@task(name="image-to-video", **ON_GPU)
@on_gpu
def _image_to_video(profile: Profile, store_url: str, ctx: RunContext, image_key: str,
                    prompt: str | None, seed: int, segment: int = 0,
                    instruction: str | None = None) -> VideoArtifact:
    """A clip from ``image_key`` given ``prompt`` (without one, an edit's ``instruction``:
    :func:`video_text`)."""
    agent = agents_with_weights(profile, store_url).image_to_video
    store = open_store(store_url)
    text, said = video_text(agent, prompt, instruction)
    frames = agent(load_image(store, image_key), text, seed)
    return save_video(store, media.images_to_array(frames), float(profile.image_to_video.fps),
                      provenance("video", ctx, seed, [agent.model_ref], [image_key],
                                 stage="clip", segment=segment, **said))


text_to_image, image_to_image = GpuTask(_text_to_image), GpuTask(_image_to_image)
image_to_video = GpuTask(_image_to_video)


@task(name="last-frame", **CACHED)
def last_frame(store_url: str, ctx: RunContext, video: VideoArtifact) -> str:
    """The clip's final frame as an image: where the next segment starts."""
    store = open_store(store_url)
    frames, _ = load_frames(store, video.frames_key)
    return save_image(store, media.array_to_image(frames[-1]),
                      provenance("image", ctx, parents=[video.frames_key], stage="last_frame"))


@task(name="join-clips", retries=2, retry_delay_seconds=5,
      retry_condition_fn=_transient, **CACHED)
def join_clips(store_url: str, ctx: RunContext, clips: list[VideoArtifact]) -> VideoArtifact:
    store = open_store(store_url)
    frames = media.join_clips([load_frames(store, c.frames_key)[0] for c in clips])
    return save_video(store, frames, clips[0].fps,
                      provenance("video", ctx, parents=[c.frames_key for c in clips],
                                 stage="final", segments=len(clips)))


@task(name="first-frame", **CACHED)
def first_frame(store_url: str, ctx: RunContext, video: VideoArtifact) -> str:
    """The video's opening frame as an image: what an edit or a restyle starts from."""
    store = open_store(store_url)
    frames, _ = load_frames(store, video.frames_key)
    return save_image(store, media.array_to_image(frames[0]),
                      provenance("image", ctx, parents=[video.frames_key], stage="first_frame"))


@task(name="connect", **ON_GPU)
@on_gpu
def _connect(profile: Profile, store_url: str, ctx: RunContext, before: VideoArtifact,
             after: VideoArtifact, prompt: str | None, seed: int) -> VideoArtifact:
    """A transition clip from ``before``'s last frame to ``after``'s first (video connector),
    given ``prompt`` (:func:`video_text`)."""
    agent = agents_for(profile).connector
    store = open_store(store_url)
    first = media.array_to_image(load_frames(store, before.frames_key)[0][-1])
    last = media.array_to_image(load_frames(store, after.frames_key)[0][0])
    text, said = video_text(agent, prompt)
    frames = agent(first, last, text, seed)
    return save_video(store, media.images_to_array(frames), float(profile.connector.fps),
                      provenance("video", ctx, seed, [agent.model_ref],
                                 [before.frames_key, after.frames_key], stage="transition",
                                 **said))


connect = GpuTask(_connect)
# What `mora worker` serves for the SOP flows (the CLI adds tasks/candidates.py's sampling).
SOP_GPU_TASKS = [t.task for t in (text_to_image, image_to_image, image_to_video, connect)]


@task(name="seam-drift", **CACHED)
def seam_drift(store_url: str, before: VideoArtifact, after: VideoArtifact) -> float:
    """Mean absolute pixel difference (0-255) between ``before``'s last and ``after``'s first frame."""
    store = open_store(store_url)
    return media.mean_abs_diff(load_frames(store, before.frames_key)[0][-1],
                               load_frames(store, after.frames_key)[0][0])


@task(name="splice", retries=2, retry_delay_seconds=5,
      retry_condition_fn=_transient, **CACHED)
def splice(store_url: str, ctx: RunContext, parts: list[VideoArtifact],
           params: dict | None = None) -> VideoArtifact:
    """Join videos of any size and fps at the first one's size and fps (its frames unchanged)."""
    store = open_store(store_url)
    frames, fps = media.join_conformed([load_frames(store, p.frames_key) for p in parts])
    return save_video(store, frames, fps, provenance(
        "video", ctx, parents=[p.frames_key for p in parts], stage="final",
        part_frames=[p.num_frames for p in parts], **(params or {})))
