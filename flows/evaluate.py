"""Evaluate videos (metrics/, paper §4.1): ingest → twelve metrics per video → results table in
the store and on the run page → our numbers beside the paper's table for the task.

`evaluate_weights`: fine-tuned weights (or the base) sampled on a training config's held-out
prompts × seeds, scored as a training round scores them, plus every sample's metrics."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from prefect import flow, get_run_logger

from flows.common import open_profile
from flows.params import (EvalTask, HeldOutSeeds, ProfileRef, Prompt, Refresh, Source, StoreUrl,
                          Videos, WeightsRef)
from flows.training import configured
from metrics.paper_tables import paper_markdown
from configs.errors import MoraError
from storage import open_store
from tasks.artifacts import RunContext
from tasks.evaluate import evaluate_video, export_vbench, publish_markdown, write_results
from tasks.inputs import ingest
from tasks.training import HeldOutScore, held_out_score

class EvaluateResult(BaseModel):
    store: str
    records: list[dict[str, Any]] = Field(description="metric records (tasks/evaluate.py), 12 "
                                          "per video, in order")
    inputs: list[str] = Field(description="the evaluated videos' input artifact keys")
    parquet_key: str
    csv_key: str
    markdown: str = Field(description="ours beside the paper's table for the task")
    vbench_keys: list[str] = Field(default_factory=list,
                                   description="the VBench custom_input copies, when asked for")


@flow(name="evaluate")
def evaluate(
    videos: Videos,
    prompt: Prompt | None = None,
    store: StoreUrl | None = None,
    task: EvalTask = "t2v",
    vbench: bool = False,
    reference: Annotated[Source | None, Field(description="extend: the input video the evaluated "
                                              "videos extend (gives TCON)")] = None,
    before: Annotated[Source | None, Field(description="connect: the clip before the evaluated "
                                           "transitions (with after, gives Tmean)")] = None,
    after: Annotated[Source | None, Field(description="connect: the clip after the evaluated "
                                          "transitions")] = None,
    refresh: Refresh = False,
) -> EvaluateResult:
    """Twelve metrics per video, stored as parquet + csv, beside the paper's table for the task."""
    logger = get_run_logger()
    # 1. Resolve the store (a bad name fails here, before any work).
    if (before is None) != (after is None):
        raise MoraError("Tmean needs both clips around the transition: give before and after")
    store_url = open_store(store).url
    ctx = RunContext(sop="evaluate", profile="none", prompt=prompt)

    # 2. Each video into the store as an input artifact (cached on content; decoding checked).
    inputs = [ingest(store_url, ctx, source, "video", "video") for source in videos]
    around = {name: ingest(store_url, ctx, source, "video", name) if source else None
              for name, source in (("reference", reference), ("before", before),
                                   ("after", after))}

    # 3. The twelve metrics of each video, named as the caller named it (cached on content,
    #    prompt, name and the metrics code).
    records = [rec for video, source in zip(inputs, videos)
               for rec in evaluate_video(store_url, video, prompt, label=source, **around)]

    # 4. The results table: parquet + csv in the store, a table artifact on the run page.
    tables = write_results(store_url, ctx, records, list(dict.fromkeys(v.key for v in inputs)))

    # 5. Ours beside the paper's published rows for this task.
    markdown = publish_markdown(paper_markdown(records, task))

    # 6. Optionally, the videos laid out for VBench's custom_input mode.
    vbench_keys: list[str] = []
    if vbench:
        from prefect.runtime import flow_run

        prompts = [prompt or source.rsplit("/", 1)[-1].rsplit(".", 1)[0] for source in videos]
        vbench_keys = export_vbench(inputs, prompts, store_url, run=str(flow_run.id), ctx=ctx)
    logger.info("evaluate: %d video(s), %d record(s) → %s", len(inputs), len(records),
                open_store(store_url).uri(tables.parquet_key))
    return EvaluateResult(store=store_url, records=records, inputs=[v.key for v in inputs],
                          parquet_key=tables.parquet_key, csv_key=tables.csv_key,
                          markdown=markdown, vbench_keys=vbench_keys)


class WeightsEvaluation(BaseModel):
    store: str
    weights: list[str] = Field(description="the checkpoint keys the samples were made with")
    held_out: HeldOutScore
    records: list[dict[str, Any]] = Field(description="metric records (tasks/evaluate.py) of "
                                          "every held-out sample")
    parquet_key: str
    csv_key: str


@flow(name="evaluate-weights", log_prints=True)
def evaluate_weights(
    weights: WeightsRef,
    config: str = "tiny",
    profile: ProfileRef | None = None,
    store: StoreUrl | None = None,
    seeds: HeldOutSeeds | None = None,
    refresh: Refresh = False,
) -> WeightsEvaluation:
    """Fine-tuned weights sampled on a training config's held-out prompts, scored by its judges."""
    # The held-out score by the config's own judges (with its interval), and the metrics of
    # every sample.
    # 1. Config, profile, store and weights (missing or foreign checkpoints fail here).
    cfg = configured(config, held_out_seeds=seeds)
    prof, store_url, keys = open_profile(profile or cfg.profile, store, weights)
    ctx = RunContext(sop="evaluate-weights", profile=prof.name, weights=keys)

    # 2. Held-out samples made with the weights, scored by the config's judges.
    score = held_out_score(prof, cfg, store_url, ctx, None)

    # 3. The metrics of each sample, and the results table.
    prompts = cfg.held_out_prompts
    records = [rec for i, key in enumerate(score.videos)
               for rec in evaluate_video(store_url, key, prompts[i % len(prompts)],
                                         label=f"held-out/{i + 1}")]
    tables = write_results(store_url, ctx, records, score.videos)
    interval = "" if score.low is None else f" [95% CI {score.low:.4f}, {score.high:.4f}]"
    print(f"evaluate-weights: {weights} → held-out {score.mean:.4f}{interval} over "
          f"{len(score.scores)} samples")
    return WeightsEvaluation(store=store_url, weights=list(keys), held_out=score, records=records,
                             parquet_key=tables.parquet_key, csv_key=tables.csv_key)
