"""Evaluation tasks: one video → its metric records (metrics/base.py; cached); the results
table into the store (parquet + csv) and onto the run page; a copy of the videos laid out for
VBench's custom_input.

Thin Prefect tasks around :mod:`metrics` (which has no Prefect); every read and write goes
through the store.
"""

from __future__ import annotations

import hashlib
import io
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from storage import open_store
from storage.inputs import STORE_SCHEME
from storage import media
from tasks.artifacts import RunContext, provenance
from tasks.cache import MoraCache
from tasks.inputs import InputArtifact

RECORD_FIELDS = ("video", "metric", "value", "method", "kind")


class EvalTables(BaseModel, frozen=True):
    """Where the results table went: the same rows as parquet and as csv."""

    parquet_key: str
    csv_key: str


@lru_cache(maxsize=1)
def _video_bytes(store_url: str, video: InputArtifact | str) -> tuple[bytes, str]:
    """The stored video's bytes and suffix: an input artifact, or a store key (store:// optional)."""
    key = video.key if isinstance(video, InputArtifact) else video.removeprefix(STORE_SCHEME)
    return open_store(store_url).get_bytes(key), "." + key.rsplit(".", 1)[-1].lower()


def _content(store_url: str, video: InputArtifact | str | None) -> str:
    if video is None:
        return "-"
    if isinstance(video, InputArtifact):
        return video.sha256
    return hashlib.sha256(_video_bytes(store_url, video)[0]).hexdigest()


def _content_key(inputs) -> str:
    """Cached on the videos' content, not on how they are named (the code, the metrics
    included, is in every key: tasks/cache.py)."""
    store_url = inputs["store_url"]
    videos = [_content(store_url, inputs.get(name)) for name in ("video", "reference", "before", "after")]
    return "|".join(["mora-eval", *videos, repr(inputs.get("prompt")),
                     repr(inputs.get("caption")), repr(inputs.get("label"))])


@task(name="evaluate-video", cache_policy=MoraCache(inputs_key=_content_key),
      persist_result=True)
def evaluate_video(store_url: str, video: InputArtifact | str, prompt: str | None = None,
                   caption: str | None = None, label: str | None = None,
                   reference: InputArtifact | str | None = None,
                   before: InputArtifact | str | None = None,
                   after: InputArtifact | str | None = None) -> list[dict[str, Any]]:
    """The twelve metric records (metrics/suite.py) of one stored video (``label`` names it in
    ``"video"``; default: where it came from). ``reference``: the input video that ``video`` extends (TCON);
    ``before``/``after``: the clips a transition ``video`` connects (Tmean). Cached on the
    videos' content and prompt (tasks/cache.py)."""
    from metrics import evaluate_video as run_metrics

    def frames_of(stored: InputArtifact | str | None, name: str):
        if stored is None:
            return None
        data, suffix = _video_bytes(store_url, stored)
        return media.decode_video(data, suffix, name)[0]

    if label is None:
        label = video.source if isinstance(video, InputArtifact) else video
    data, suffix = _video_bytes(store_url, video)
    frames, fps = media.decode_video(data, suffix, f"video '{label}'")
    return [r.as_record(label) for r in run_metrics(
        frames, fps, prompt=prompt, caption=caption,
        input_frames=frames_of(reference, "the reference video"),
        prev_frames=frames_of(before, "the clip before"),
        next_frames=frames_of(after, "the clip after"))]


def records_frame(records: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame.from_records(records, columns=list(RECORD_FIELDS)).astype(
        {"value": "float64"})


@task(name="write-eval-table")
def write_results(store_url: str, ctx: RunContext, records: list[dict[str, Any]],
                  parents: list[str]) -> EvalTables:
    """The records as one table in the store, ``eval/…parquet`` and the same name ``.csv``
    (provenance parents: the evaluated videos), and as a table artifact on the run page."""
    store = open_store(store_url)
    frame = records_frame(records)
    prov = provenance("eval", ctx, parents=parents, rows=len(frame),
                      videos=int(frame["video"].nunique()))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    parquet_key = store.put_bytes(store.new_key("eval", ".parquet"), buffer.getvalue(), prov)
    csv_key = parquet_key.removesuffix(".parquet") + ".csv"
    store.put_bytes(csv_key, frame.to_csv(index=False).encode(), prov)
    create_table_artifact(table=[{k: r[k] for k in RECORD_FIELDS} for r in records],
                          key="mora-eval", description=f"{len(records)} metric value(s) of "
                          f"{frame['video'].nunique()} video(s); also `{parquet_key}`, `{csv_key}`")
    return EvalTables(parquet_key=parquet_key, csv_key=csv_key)


@task(name="publish-paper-table")
def publish_markdown(markdown: str, key: str = "mora-eval-paper") -> str:
    create_markdown_artifact(markdown=markdown, key=key,
                             description="our evaluation beside the paper's published numbers")
    return markdown


# --------------------------------------------------------------------------- VBench custom_input

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]+")


def vbench_name(prompt: str, index: int, limit: int = 200) -> str:
    """``{prompt}-{index}.mp4``: VBench's custom_input mode reads a video's prompt from its file
    name (the stem, less a trailing ``-<number>``). Slashes and control characters become
    spaces; the prompt is cut to ``limit`` UTF-8 bytes to stay a valid file name."""
    text = " ".join(_UNSAFE.sub(" ", prompt).split()).strip(". ") or "video"
    while len(text.encode()) > limit:
        text = text[:-1]
    return f"{text.rstrip()}-{index}.mp4"


@task(name="export-vbench")
def export_vbench(videos: list[InputArtifact | str], prompts: list[str], store: str,
                  run: str | None = None, ctx: RunContext | None = None) -> list[str]:
    """Copy ``videos`` (input artifacts or store keys) to ``vbench/<run>/{prompt}-{i}.mp4``, the
    folder layout ``vbench evaluate --mode=custom_input --videos_path <folder>`` reads; non-mp4
    videos are re-encoded as mp4. Returns the keys written."""
    import uuid

    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} video(s) but {len(prompts)} prompt(s)")
    opened = open_store(store)
    ctx = ctx or RunContext(sop="evaluate", profile="none")
    run = run or uuid.uuid4().hex
    seen: dict[str, int] = {}
    keys = []
    for video, prompt in zip(videos, prompts):
        data, suffix = _video_bytes(opened.url, video)
        if suffix != ".mp4":
            data = media.encode_mp4(*media.decode_video(data, suffix))
        name = vbench_name(prompt, 0)
        stem = name.removesuffix("-0.mp4")
        seen[stem] = seen.get(stem, -1) + 1
        parent = video.key if isinstance(video, InputArtifact) else video.removeprefix(STORE_SCHEME)
        keys.append(opened.put_bytes(f"vbench/{run}/{stem}-{seen[stem]}.mp4", data, provenance(
            "vbench-export", ctx, parents=[parent], vbench_prompt=stem, mode="custom_input"),
            overwrite=True))  # fixed names (VBench reads prompts from them); a retried run rewrites
    return keys
