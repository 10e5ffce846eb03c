"""Reading and writing the artifacts stages hand each other, with provenance, through a Store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from storage import ModelRef, Provenance, Store
from storage import media

if TYPE_CHECKING:
    from PIL.Image import Image


class RunContext(BaseModel, frozen=True):
    """What every artifact of one SOP run records about where it came from (provenance only:
    tasks take what their models are given, the prompt included, as parameters of their own)."""

    sop: str
    profile: str
    prompt: str | None = None
    enhanced_prompt: str | None = None
    weights: tuple[str, ...] = ()  # store keys of the fine-tuned checkpoints the run samples with


class VideoArtifact(BaseModel, frozen=True):
    """A video in the store: the lossless frames (used by later stages) and the playable mp4."""

    frames_key: str
    mp4_key: str
    num_frames: int
    height: int
    width: int
    fps: float


def _current_flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.id


def _worker() -> dict[str, Any]:
    """Which machine, process and devices made an artifact (one worker per GPU pins its
    device), and how many models that process had loaded so far (residency shows as a count
    that stops growing)."""
    import os
    import socket

    from agents.cache import MODEL_CACHE

    return {"host": socket.gethostname(), "pid": str(os.getpid()),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "model_loads": MODEL_CACHE.stats.loads}


def provenance(kind: str, ctx: RunContext, seed: int | None = None, models: list[dict] = (),
               parents: list[str] = (), **params: Any) -> Provenance:
    if models:  # made by a model: record where it ran
        params = {**params, "worker": _worker()}
    if ctx.weights:  # every artifact of a run on fine-tuned weights names them
        params = {**params, "weights": [f"store://{key}" for key in ctx.weights]}
    return Provenance(
        kind=kind, flow_run_id=_current_flow_run_id(), sop=ctx.sop, prompt=ctx.prompt,
        enhanced_prompt=ctx.enhanced_prompt, seed=seed, profile=ctx.profile,
        models=[ModelRef(**m) for m in models], parents=list(parents), params=params,
    )


def save_image(store: Store, image: "Image", prov: Provenance) -> str:
    key = store.new_key("image", ".png")
    prov = prov.model_copy(update={"content_type": "image/png",
                                   "params": {**prov.params, "width": image.width,
                                              "height": image.height}})
    return store.put_bytes(key, media.png_bytes(image), prov)


def load_image(store: Store, key: str) -> "Image":
    return media.read_image(store.get_bytes(key), name=key)


def save_video(store: Store, frames: np.ndarray, fps: float, prov: Provenance) -> VideoArtifact:
    """Write the lossless frames, then the mp4 rendition whose parent they are."""
    t, h, w, _ = frames.shape
    params = {**prov.params, "num_frames": t, "height": h, "width": w, "fps": fps}
    frames_key = store.new_key("video", ".npz")
    store.put_bytes(frames_key, media.frames_npz(frames, fps), prov.model_copy(
        update={"content_type": "application/x-npz", "params": params}))
    mp4_key = frames_key.removesuffix(".npz") + ".mp4"
    store.put_bytes(mp4_key, media.encode_mp4(frames, fps), prov.model_copy(
        update={"content_type": "video/mp4", "params": params,
                "parents": [*prov.parents, frames_key]}))
    return VideoArtifact(frames_key=frames_key, mp4_key=mp4_key, num_frames=t, height=h,
                         width=w, fps=fps)


def load_frames(store: Store, key: str) -> tuple[np.ndarray, float]:
    suffix = "." + key.rsplit(".", 1)[-1]
    return media.decode_video(store.get_bytes(key), suffix, name=key)


def put_safetensors(store: Store, key: str, write, prov: Provenance) -> str:
    """Store what ``write(path)`` writes to a local safetensors file (checkpoints stream to disk
    and on to the store: no whole-file bytes object)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="mora-checkpoint-") as folder:
        path = Path(folder) / "data.safetensors"
        write(path)
        return store.put_file(key, path, prov)


def read_safetensors(store: Store, key: str, read):
    """``read(path)`` on a local copy of the stored file (the file itself in a local store)."""
    with store.local_path(key) as path:
        return read(path)
