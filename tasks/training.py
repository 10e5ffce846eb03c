"""Prefect tasks of the data-free training loop (paper §3.2, A.6, A.7): prompts, candidates,
votes, the round's dataset, fine-tuning in checkpoint-sized chunks, held-out scores, reports.

Every task is cached on its inputs (store keys included) with persisted results, so a round
killed at any point and started again with the same round id redoes no finished work.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from prefect import task

from agents.base import FinetunedWeights
from agents.registry import agents_for
from configs.schema import Profile
from configs.training import TrainingConfig
from storage import open_store
from tasks import media
from tasks.artifacts import (RunContext, VideoArtifact, load_frames, load_image, provenance,
                             save_image, save_video)
from tasks.generate import CACHED, ON_GPU, on_gpu

ON_CPU = dict(CACHED)
HELD_OUT_CRITERION = 3  # "Examine the temporal coherence…": the held-out score's criterion


class Candidate(BaseModel, frozen=True):
    index: int
    seed: int
    first_frame_key: str
    video: VideoArtifact


class CandidateSet(BaseModel, frozen=True):
    prompt_index: int
    prompt: str
    enhanced_prompt: str
    candidates: list[Candidate]


class Vote(BaseModel, frozen=True):
    criterion_id: int
    criterion: str
    judgements: list[dict]
    agreed: int | None  # the candidate both judges ranked first, or None


class Decision(BaseModel, frozen=True):
    outcome: Literal["accepted", "human", "unattended", "discarded"]
    chosen: int | None


class ChunkResult(BaseModel, frozen=True):
    state_key: str
    step: int
    losses: list[float]
    factors: list[float]


def _weights(store_url: str, key: str | None) -> FinetunedWeights | None:
    if key is None:
        return None
    from agents.finetune import load_weights

    return FinetunedWeights(key, lambda: read_safetensors(open_store(store_url), key, load_weights))


def put_safetensors(store, key: str, write, prov) -> str:
    """Store what ``write(path)`` writes to a local safetensors file (checkpoints stream to disk
    and on to the store: no whole-file bytes object)."""
    with tempfile.TemporaryDirectory(prefix="mora-checkpoint-") as folder:
        path = Path(folder) / "data.safetensors"
        write(path)
        return store.put_file(key, path, prov)


def read_safetensors(store, key: str, read):
    """``read(path)`` on a local copy of the stored file (the file itself in a local store)."""
    with store.local_path(key) as path:
        return read(path)


def _agents(profile: Profile, cfg: TrainingConfig, store_url: str, weights_key: str | None):
    """(text-to-image, image-to-video) agents, the fine-tuned one sampling with the weights."""
    agents = agents_for(profile)
    weights = _weights(store_url, weights_key)
    if cfg.finetune.target == "text_to_image":
        return agents.text_to_image.with_weights(weights), agents.image_to_video
    return agents.text_to_image, agents.image_to_video.with_weights(weights)


@task(name="generate-prompts", **ON_CPU)
def generate_prompts(profile: Profile, cfg: TrainingConfig, seed: int,
                     seen: list[str]) -> list[str]:
    from agents.prompt import training_prompts

    return training_prompts(agents_for(profile).enhancer, cfg.prompts, seed,
                            cfg.dedup_threshold, seen=seen)


@task(name="sample-candidates", **ON_GPU)
@on_gpu
def sample_candidates(profile: Profile, cfg: TrainingConfig, store_url: str, ctx: RunContext,
                      prompt_index: int, prompt: str, seeds: list[int],
                      weights_key: str | None) -> CandidateSet:
    """C candidate videos for one prompt, each through the whole agent chain with its own seed;
    ``cfg.sampling.batch`` candidates per pipeline call (same frames as one call per seed)."""
    enhanced = agents_for(profile).enhancer.enhance(prompt)
    ctx = ctx.model_copy(update={"prompt": prompt, "enhanced_prompt": enhanced})
    text_to_image, image_to_video = _agents(profile, cfg, store_url, weights_key)
    store = open_store(store_url)
    size = cfg.sampling.batch or len(seeds)
    candidates = []
    for start in range(0, len(seeds), size):
        chunk = seeds[start:start + size]
        frames = text_to_image.batch(enhanced, chunk, cfg.sampling.exact)
        frame_keys = [save_image(store, frame, provenance("image", ctx, seed,
                                                          [text_to_image.model_ref],
                                                          stage="candidate_first_frame"))
                      for frame, seed in zip(frames, chunk)]
        videos = image_to_video.batch(frames, enhanced, chunk, cfg.sampling.exact)
        for offset, (seed, frame_key, video) in enumerate(zip(chunk, frame_keys, videos)):
            index = start + offset
            artifact = save_video(store, media.images_to_array(video),
                                  float(profile.image_to_video.fps), provenance(
                                      "video", ctx, seed, [image_to_video.model_ref], [frame_key],
                                      stage="candidate", prompt_index=prompt_index,
                                      candidate=index))
            candidates.append(Candidate(index=index, seed=seed, first_frame_key=frame_key,
                                        video=artifact))
    return CandidateSet(prompt_index=prompt_index, prompt=prompt, enhanced_prompt=enhanced,
                        candidates=candidates)


@task(name="judge-candidates", **ON_CPU)
def judge_candidates(cfg: TrainingConfig, store_url: str, cset: CandidateSet,
                     criterion_id: int) -> Vote:
    """Both judges rank the candidates under one criterion (paper A.6); raw answers are kept."""
    from agents.judges import common_best, criterion_text, make_judge, rank_all

    store = open_store(store_url)
    videos = [load_frames(store, c.video.frames_key)[0] for c in cset.candidates]
    judgements = rank_all([make_judge(spec) for spec in cfg.judges], videos,
                          cset.candidates[0].video.fps, cset.enhanced_prompt, criterion_id)
    return Vote(criterion_id=criterion_id, criterion=criterion_text(criterion_id),
                judgements=[j.model_dump(mode="json") for j in judgements],
                agreed=common_best(judgements))


@task(name="candidates-sheet", **CACHED)
def candidates_sheet(store_url: str, ctx: RunContext, cset: CandidateSet) -> str:
    """One row of evenly spaced frames per candidate: what a reviewer compares."""
    store = open_store(store_url)
    rows = [np.asarray(media.contact_sheet(load_frames(store, c.video.frames_key)[0],
                                           columns=6, max_frames=6)) for c in cset.candidates]
    sheet = media.array_to_image(np.concatenate(rows, axis=0))
    return save_image(store, sheet, provenance(
        "preview", ctx, parents=[c.video.frames_key for c in cset.candidates],
        stage="candidates", prompt_index=cset.prompt_index))


MANIFEST_COLUMNS = ["round_id", "prompt_index", "prompt", "enhanced_prompt", "criterion_id",
                    "criterion", "judge_a", "judge_a_raw", "judge_a_ranking", "judge_b",
                    "judge_b_raw", "judge_b_ranking", "decision", "chosen", "seed",
                    "first_frame_key", "video_key", "candidate_keys"]


@task(name="write-dataset", retries=2, retry_delay_seconds=5, **CACHED)
def write_dataset(store_url: str, ctx: RunContext, round_id: str, csets: list[CandidateSet],
                  votes: list[Vote], decisions: list[Decision]) -> str:
    """The round's accepted examples as a parquet manifest; media stay where sampling put them."""
    import pandas as pd

    rows = []
    for cset, vote, decision in zip(csets, votes, decisions):
        if decision.chosen is None:
            continue
        chosen = cset.candidates[decision.chosen]
        a, b = vote.judgements
        rows.append({
            "round_id": round_id, "prompt_index": cset.prompt_index, "prompt": cset.prompt,
            "enhanced_prompt": cset.enhanced_prompt, "criterion_id": vote.criterion_id,
            "criterion": vote.criterion, "judge_a": a["judge"], "judge_a_raw": a["raw"],
            "judge_a_ranking": a["ranking"], "judge_b": b["judge"], "judge_b_raw": b["raw"],
            "judge_b_ranking": b["ranking"], "decision": decision.outcome,
            "chosen": decision.chosen, "seed": chosen.seed,
            "first_frame_key": chosen.first_frame_key, "video_key": chosen.video.frames_key,
            "candidate_keys": [c.video.frames_key for c in cset.candidates],
        })
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store = open_store(store_url)
    key = store.new_key(f"rounds/{round_id}", ".parquet")
    return store.put_bytes(key, buffer.getvalue(), provenance(
        "dataset", ctx, parents=[r["video_key"] for r in rows], stage="dataset",
        round_id=round_id, rows=len(rows)))


def read_dataset(store_url: str, key: str):
    import pandas as pd

    return pd.read_parquet(io.BytesIO(open_store(store_url).get_bytes(key)))


@task(name="finetune-chunk", **ON_GPU)
@on_gpu
def finetune_chunk(profile: Profile, cfg: TrainingConfig, store_url: str, ctx: RunContext,
                   dataset_keys: list[str], start_key: str | None, until_step: int) -> ChunkResult:
    """Self-modulated fine-tuning from ``start_key``'s state up to ``until_step``; the state
    (weights, modulation, EMA, optimizer) is checkpointed to the store as safetensors."""
    import pandas as pd

    from agents.finetune import TrainingSample, finetune, load_state, save_state

    store = open_store(store_url)
    rows = pd.concat([read_dataset(store_url, k) for k in dataset_keys], ignore_index=True)
    samples = []
    for row in rows.itertuples():
        target, fps = load_frames(store, row.video_key)
        if cfg.finetune.target == "text_to_image":
            target = target[0]
        samples.append(TrainingSample(prompt=row.enhanced_prompt, target=target,
                                      first_frame=load_image(store, row.first_frame_key),
                                      fps=int(round(fps))))
    agents = agents_for(profile)
    agent = agents.text_to_image if cfg.finetune.target == "text_to_image" else \
        agents.image_to_video
    start = read_safetensors(store, start_key, load_state) if start_key else None
    factors: list[float] = []
    # On the profile's device, whatever the pipeline's offload setting (it keeps its placement).
    state, losses = finetune(agent.pipe, cfg.finetune, samples, start=start,
                             until_step=until_step, device=agent.runtime.device,
                             on_step=lambda step, loss, factor: factors.append(factor))
    key = store.new_key("checkpoints", ".safetensors")
    put_safetensors(store, key, lambda path: save_state(state, path), provenance(
        "checkpoint", ctx, models=[agent.model_ref], parents=[*dataset_keys,
                                                              *([start_key] if start_key else [])],
        stage="train-state", step=state.step, samples=len(samples)))
    return ChunkResult(state_key=key, step=state.step, losses=losses, factors=factors)


@task(name="export-weights", **CACHED)
def export_weights(store_url: str, ctx: RunContext, state_key: str) -> str:
    """What sampling loads (EMA weights + modulation), as safetensors, beside the full state."""
    from agents.finetune import inference_weights, load_state, save_weights

    store = open_store(store_url)
    state = read_safetensors(store, state_key, load_state)
    key = store.new_key("checkpoints", ".safetensors")
    return put_safetensors(store, key,
                           lambda path: save_weights(inference_weights(state), path, dict(state.meta)),
                           provenance("checkpoint", ctx, parents=[state_key],
                                      stage="weights", step=state.step))


@task(name="held-out-score", **ON_GPU)
@on_gpu
def held_out_score(profile: Profile, cfg: TrainingConfig, store_url: str, ctx: RunContext,
                   weights_key: str | None) -> float:
    """Mean judge score of fresh samples on the fixed held-out prompts (same seeds every time)."""
    from agents.judges import MetricCache, MetricJudge
    from configs.judges import DEFAULT_METRIC_JUDGES

    text_to_image, image_to_video = _agents(profile, cfg, store_url, weights_key)
    enhancer = agents_for(profile).enhancer
    judges = [MetricJudge(spec) for spec in DEFAULT_METRIC_JUDGES]
    scores = []
    for i, prompt in enumerate(cfg.held_out_prompts):
        enhanced = enhancer.enhance(prompt)
        seed = cfg.held_out_seed + i
        video = media.images_to_array(image_to_video(text_to_image(enhanced, seed), enhanced, seed))
        cache = MetricCache()
        for judge in judges:
            judgement = judge.rank([video], float(profile.image_to_video.fps), enhanced,
                                   HELD_OUT_CRITERION, metric_cache=cache)
            scores.append(judgement.scores[0])
    return float(np.mean(scores))


@task(name="write-report", **CACHED)
def write_report(store_url: str, ctx: RunContext, round_id: str, report: dict) -> str:
    store = open_store(store_url)
    key = store.new_key(f"rounds/{round_id}", ".json")
    return store.put_bytes(key, json.dumps(report, indent=2).encode(), provenance(
        "report", ctx, parents=[k for k in (report.get("dataset_key"), report.get("weights_key"))
                                if k], stage="round-report", round_id=round_id))


@task(name="plot-rounds")
def plot_rounds(store_url: str, ctx: RunContext, reports: list[dict]) -> str:
    """A PNG of the per-round figures: held-out score before/after, agreement, loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round_id"] for r in reports]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].plot(rounds, [r["held_out_before"] for r in reports], "o--", label="before")
    axes[0].plot(rounds, [r["held_out_after"] for r in reports], "o-", label="after")
    axes[0].set_title("held-out mean judge score")
    axes[0].legend()
    axes[1].bar(rounds, [r["agreement_rate"] for r in reports])
    axes[1].set_ylim(0, 1)
    axes[1].set_title("judge agreement rate")
    step = 0
    for r in reports:
        xs = list(range(step + 1, step + 1 + len(r["losses"])))
        axes[2].plot(xs, r["losses"], label=r["round_id"])
        step += len(r["losses"])
    axes[2].set_title("training loss per step")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    store = open_store(store_url)
    key = store.new_key("reports", ".png")
    return store.put_bytes(key, buffer.getvalue(), provenance(
        "report", ctx, stage="rounds-plot", rounds=rounds))


class LatestRound(BaseModel, frozen=True):
    round_id: str | None = None
    state_key: str | None = None
    weights_key: str | None = None
    prompts: list[str] = []


@task(name="latest-round")
def latest_round(store_url: str, exclude: str | None = None) -> LatestRound:
    """The newest round report in the store (other than round ``exclude``): where a scheduled
    round continues from."""
    store = open_store(store_url)
    reports = [k for k in store.list("rounds/") if k.endswith(".json")
               and not k.startswith(f"rounds/{exclude}/")]
    if not reports:
        return LatestRound()
    newest = max(reports, key=lambda k: store.read_provenance(k).created_at)
    report = json.loads(store.get_bytes(newest))
    previous = [json.loads(store.get_bytes(k))["prompts"] for k in reports]
    return LatestRound(round_id=report["round_id"], state_key=report["state_key"],
                       weights_key=report["weights_key"],
                       prompts=[p for prompts in previous for p in prompts])
