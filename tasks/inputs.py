"""Ingest: a user's image or video goes into the store as an input artifact before any stage.

Every output's provenance can then name its inputs by store key. The task is cached on the
file's content (sha256) and the store, not on its path: the same file given twice, under any
name, is stored once.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel

from prefect import task

from storage import open_store
from storage.inputs import STORE_SCHEME, read_input
from storage import media
from tasks.artifacts import RunContext, VideoArtifact, provenance
from tasks.cache import MoraCache

InputKind = Literal["image", "video"]


class InputArtifact(BaseModel, frozen=True):
    """A user's file as stored: the original bytes under ``key`` plus what decoding found."""

    key: str
    kind: InputKind
    source: str
    sha256: str
    num_frames: int
    height: int
    width: int
    fps: float | None = None

    @property
    def video(self) -> VideoArtifact:
        """The stored input as a video later stages read (its frames decode from ``key``)."""
        return VideoArtifact(frames_key=self.key, mp4_key=self.key, num_frames=self.num_frames,
                             height=self.height, width=self.width, fps=self.fps or 0.0)


def _content_key(inputs) -> str | None:
    """Cache on what the file holds (the store is in every key: tasks/cache.py); None (no
    caching) when it cannot be read: the task says why."""
    from configs.errors import MoraError

    store_url, source, kind = inputs["store_url"], inputs["source"], inputs["kind"]
    try:
        data = read_input(source, open_store(store_url), kind).data
    except MoraError:
        return None
    return f"mora-input|{kind}|{hashlib.sha256(data).hexdigest()}"


@task(name="ingest-input", cache_policy=MoraCache(inputs_key=_content_key), persist_result=True)
def ingest(store_url: str, ctx: RunContext, source: str, kind: InputKind,
           name: str | None = None) -> InputArtifact:
    """Read ``source`` (a path or store key), check it decodes, store it as kind "input"."""
    store = open_store(store_url)
    name = name or kind
    data, suffix, label = read_input(source, store, name)
    frames, fps = media.decode_input(data, suffix, kind, f"{name} '{label}'")
    t, h, w, _ = frames.shape
    params = {"stage": "input", "media": kind, "source": label, "num_frames": t, "height": h,
              "width": w, "fps": fps}
    parents = [label.removeprefix(STORE_SCHEME)] if label.startswith(STORE_SCHEME) else []
    key = store.put_bytes(store.new_key("input", suffix), data,
                          provenance("input", ctx, parents=parents, **params))
    return InputArtifact(key=key, kind=kind, source=label, sha256=hashlib.sha256(data).hexdigest(),
                         num_frames=t, height=h, width=w, fps=fps)
