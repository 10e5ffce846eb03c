"""Prefect tasks of the data-free training loop (paper §3.2, A.6, A.7): prompts, candidates,
votes, the round's dataset, fine-tuning in checkpoint-sized chunks, held-out scores, reports.

Every task is cached on its inputs (store keys included) with persisted results, so a round
killed at any point and started again with the same round id redoes no finished work.
"""

from __future__ import annotations

import io
import json
from typing import Literal

import numpy as np
from pydantic import BaseModel

from prefect import task

from agents.registry import agents_for
from configs.schema import Profile
from configs.training import TrainingConfig
from storage import open_store
from tasks import media
from tasks.artifacts import (RunContext, VideoArtifact, load_frames, load_image, provenance,
                             put_safetensors, read_safetensors, save_image, save_video)
from tasks.generate import CACHED, ON_GPU, on_gpu
from tasks.weights import agents_with_weights, target_of, with_checkpoint, with_checkpoints

ON_CPU = dict(CACHED)


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
    outcome: Literal["accepted", "human", "unattended", "discarded", "random"]
    chosen: int | None


class ChunkResult(BaseModel, frozen=True):
    state_key: str
    step: int
    losses: list[float]
    factors: list[float]


def _agents(profile: Profile, cfg: TrainingConfig, store_url: str, weights_key: str | None):
    """(text-to-image, image-to-video) agents: the fine-tuned ones sampling with ``weights_key``
    and the weights trained together with it (None: as the profile says), as every SOP samples
    with named weights (tasks/weights.py)."""
    if weights_key is not None:
        profile = with_checkpoints(profile, open_store(store_url), weights_key)
    agents = agents_with_weights(profile, store_url)
    return agents.text_to_image, agents.image_to_video


@task(name="generate-prompts", **ON_CPU)
def generate_prompts(profile: Profile, cfg: TrainingConfig, seed: int,
                     seen: list[str]) -> list[str]:
    """The round's prompts: from the config's prompt LLM, few-shot from its seed prompts, or
    from the profile's enhancer; near-duplicates (and ``seen`` ones) removed."""
    from agents.prompt import make_enhancer, training_prompts

    spec = cfg.prompt_generation
    if spec is None:
        return training_prompts(agents_for(profile).enhancer, cfg.prompts, seed,
                                cfg.dedup_threshold, seen=seen)
    from agents.loading import Runtime

    return training_prompts(make_enhancer(spec, Runtime.for_profile(profile).device),
                            cfg.prompts, seed, cfg.dedup_threshold, seen=seen,
                            seed_prompts=spec.examples(), few_shot=spec.few_shot)


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
    from agents.loading import load_text_tower

    store = open_store(store_url)
    rows = pd.concat([read_dataset(store_url, k) for k in dataset_keys], ignore_index=True)
    spec = cfg.finetune
    samples = []
    for row in rows.itertuples():
        target, fps = load_frames(store, row.video_key)
        # One text-to-image agent trains on the first frame; agents trained together get the
        # video (agents/finetune/train.py gives its first frame to the text-to-image agent).
        if not spec.joint and spec.target == "text_to_image":
            target = target[0]
        samples.append(TrainingSample(prompt=row.enhanced_prompt, target=target,
                                      first_frame=load_image(store, row.first_frame_key),
                                      fps=int(round(fps))))
    agents = agents_for(profile)
    trained = {target: getattr(agents, target) for target in spec.trained}
    start = read_safetensors(store, start_key, load_state) if start_key else None
    factors: list[float] = []
    # On the profile's device, whatever the pipelines' offload setting (they keep their placement).
    pipes = {target: agent.pipe for target, agent in trained.items()}
    state, losses = finetune(pipes if spec.joint else pipes[spec.target], spec, samples,
                             start=start, until_step=until_step,
                             device=trained[spec.trained[-1]].runtime.device,
                             on_step=lambda step, loss, factor: factors.append(factor),
                             text_tower=lambda: load_text_tower(profile.image_to_video, agents.runtime))
    key = store.new_key("checkpoints", ".safetensors")
    put_safetensors(store, key, lambda path: save_state(state, path), provenance(
        "checkpoint", ctx, models=[agent.model_ref for agent in trained.values()],
        parents=[*dataset_keys, *([start_key] if start_key else [])],
        stage="train-state", step=state.step, samples=len(samples)))
    return ChunkResult(state_key=key, step=state.step, losses=losses, factors=factors)


@task(name="export-weights", **CACHED)
def export_weights(store_url: str, ctx: RunContext, state_key: str) -> str:
    """What sampling loads (EMA weights + modulation), as safetensors, beside the full state:
    one file per trained agent. Agents trained together name each other (``trained_with``), so
    the returned key -- the last agent's in chain order -- brings the others along wherever it
    is used (tasks/weights.py)."""
    from agents.finetune import agent_targets, inference_weights, load_state, save_weights

    store = open_store(store_url)
    state = read_safetensors(store, state_key, load_state)
    models = [m.model_dump() for m in store.read_provenance(state_key).models]
    targets = agent_targets(state)
    pipelines = dict(zip(targets, state.meta.get("pipeline", "").split(",")))
    keys = {target: store.new_key("checkpoints", ".safetensors") for target in targets}
    joint = state.meta.get("joint") == "true"
    for target, key in keys.items():
        # The model and the agent it was trained for: what tasks/weights.py checks a run against.
        own = [m for m in models if target_of(m.get("role")) in (target, None)] or models
        meta = {**state.meta, "target": target, "pipeline": pipelines.get(target, "")}
        weights = inference_weights(state, target if joint else None)
        put_safetensors(store, key, lambda path, w=weights, m=meta: save_weights(w, path, m),
                        provenance("checkpoint", ctx, models=own, parents=[state_key],
                                   stage="weights", step=state.step, target=target,
                                   pipeline=meta["pipeline"],
                                   **({"trained_with": [k for t, k in keys.items() if t != target]}
                                      if len(keys) > 1 else {})))
    return keys[targets[-1]]


class HeldOutScore(BaseModel, frozen=True):
    """The held-out score: one value per (held-out prompt, seed) sample -- the mean of the
    config's judges' scores in [0, 1] -- their mean and its 95 % bootstrap interval."""

    mean: float
    low: float | None
    high: float | None
    scores: list[float]
    judges: list[str]
    videos: list[str]  # the samples' frames keys, prompt-major within each seed


@task(name="held-out-score", **ON_GPU)
@on_gpu
def held_out_score(profile: Profile, cfg: TrainingConfig, store_url: str, ctx: RunContext,
                   weights_key: str | None) -> HeldOutScore:
    """The config's own judges score fresh samples of the fixed held-out prompts × seeds.

    What the loop optimises is the judges' preference under criteria drawn from the paper's
    ten, so sample k is judged under criterion ``k mod 10 + 1`` (the same draws for every
    weights). A judge with scores (metrics) gives its score of the sample; a judge that only
    ranks (an MLLM) gives its preference against the base weights' sample of the same prompt
    and seed: 1 when it ranks this one first, 0 when the base's, 0.5 without a ranking (and 0.5
    for the base weights themselves, where both are the same video)."""
    from agents.judges import MetricCache, make_judge
    from metrics.stats import bootstrap_mean

    text_to_image, image_to_video = _agents(profile, cfg, store_url, weights_key)
    base_t2i, base_i2v = _agents(with_checkpoint(with_checkpoint(profile, "text_to_image", None),
                                                 "image_to_video", None), cfg, store_url, None)
    tuned = (text_to_image.weights, image_to_video.weights) != (None, None)
    judges = [make_judge(spec) for spec in cfg.judges]
    enhancer = agents_for(profile).enhancer
    store = open_store(store_url)
    fps = float(profile.image_to_video.fps)
    scores, videos = [], []
    for j in range(cfg.held_out_seeds):
        for i, prompt in enumerate(cfg.held_out_prompts):
            enhanced = enhancer.enhance(prompt)
            seed, criterion = cfg.held_out_seed + i + 1000 * j, len(scores) % 10 + 1
            video = media.images_to_array(image_to_video(text_to_image(enhanced, seed), enhanced,
                                                         seed))
            videos.append(save_video(store, video, fps, provenance(
                "video", ctx.model_copy(update={"prompt": prompt, "enhanced_prompt": enhanced}),
                seed, [text_to_image.model_ref, image_to_video.model_ref], stage="held-out",
                criterion=criterion)).frames_key)
            base = None
            if tuned and any(spec.backend != "metrics" for spec in cfg.judges):
                base = media.images_to_array(base_i2v(base_t2i(enhanced, seed), enhanced, seed))
            cache = MetricCache()
            scores.append(float(np.nanmean([
                _judge_score(spec, judge, video, base, fps, enhanced, criterion, cache)
                for spec, judge in zip(cfg.judges, judges)])))
    mean, low, high = bootstrap_mean(scores)
    return HeldOutScore(mean=mean, low=low, high=high, scores=scores,
                        judges=[spec.name for spec in cfg.judges], videos=videos)


def _judge_score(spec, judge, video: np.ndarray, base: np.ndarray | None, fps: float,
                 prompt: str, criterion: int, cache) -> float:
    """One judge's score in [0, 1] of ``video`` (see :func:`held_out_score`)."""
    if spec.backend == "metrics":
        scores = judge.rank([video], fps, prompt, criterion, metric_cache=cache).scores
        return float(scores[0]) if scores else float("nan")
    if base is None:
        return 0.5
    best = judge.rank([video, base], fps, prompt, criterion, metric_cache=cache).best
    return 0.5 if best is None else float(best == 0)


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
    for when, style in (("before", "o--"), ("after", "o-")):
        means = [r[f"held_out_{when}"] for r in reports]
        bounds = [r.get(f"held_out_{when}_ci") or [m, m] for r, m in zip(reports, means)]
        errors = [[m - b[0] for m, b in zip(means, bounds)], [b[1] - m for m, b in zip(means, bounds)]]
        axes[0].errorbar(rounds, means, yerr=errors, fmt=style, capsize=3, label=when)
    axes[0].set_title("held-out judge score (95 % CI)")
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
