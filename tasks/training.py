"""Prefect tasks of the data-free training loop (paper §3.2, A.6, A.7): prompts, candidates,
votes, the round's dataset, fine-tuning in checkpoint-sized chunks, held-out scores, reports.

Every task is cached on its inputs (store keys included) with persisted results, so a round
killed at any point and started again with the same round id redoes no finished work.
"""

from __future__ import annotations

import io
import json
import random
from typing import Literal

from pydantic import BaseModel

from prefect import task

from agents.candidates import sample_batches
from agents.registry import agents_for
from configs.schema import Profile
from configs.training import TrainingConfig
from storage import open_store
from storage import media
from tasks.artifacts import (RunContext, VideoArtifact, load_frames, load_image, provenance,
                             put_safetensors, read_safetensors, save_image, save_video)
from tasks.generate import CACHED, ON_GPU, on_gpu
from tasks.report import clips_preview
from tasks.review import ReviewPolicy, human_pick
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


def _agents(profile: Profile, store_url: str, weights_key: str | None):
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
    text_to_image, image_to_video = _agents(profile, store_url, weights_key)
    store = open_store(store_url)
    candidates = []
    for start, chunk, frames, videos in sample_batches(text_to_image, image_to_video, enhanced,
                                                       seeds, cfg.sampling.batch,
                                                       cfg.sampling.exact):
        frame_keys = [save_image(store, frame, provenance("image", ctx, seed,
                                                          [text_to_image.model_ref],
                                                          stage="candidate_first_frame"))
                      for frame, seed in zip(frames, chunk)]
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


@task(name="decide", **CACHED)
def decide(cfg: TrainingConfig, store_url: str, ctx: RunContext, cset: CandidateSet, vote: Vote,
           policy: ReviewPolicy) -> Decision:
    """Judges agree: accept. They differ: a human picks or rejects (paper A.6), or, unattended,
    the configured rule. Cached, so a resumed round does not ask again. With ``selection:
    random`` (the control of benchmarks/bench_learning.py) a seeded random candidate instead."""
    if cfg.selection == "random":
        draw = random.Random("random-pick/" + ",".join(str(c.seed) for c in cset.candidates))
        return Decision(outcome="random", chosen=draw.randrange(len(cset.candidates)))
    if vote.agreed is not None:
        return Decision(outcome="accepted", chosen=vote.agreed)
    if policy.mode == "ask":
        answer = human_pick(f"pick-{cset.prompt_index + 1}",
                            _pick_markdown(store_url, cset, vote, policy.timeout_s),
                            policy, len(cset.candidates))
        if answer is not None:
            if answer.action == "reject":
                return Decision(outcome="discarded", chosen=None)
            return Decision(outcome="human", chosen=answer.candidate - 1)
    judge_a_best = (vote.judgements[0]["ranking"] or [None])[0]
    if cfg.unattended == "judge_a" and judge_a_best is not None:
        return Decision(outcome="unattended", chosen=judge_a_best)
    return Decision(outcome="discarded", chosen=None)


def _pick_markdown(store_url: str, cset: CandidateSet, vote: Vote, expires_s: int) -> str:
    """All C candidates playing side by side, numbered as the form numbers them (1 = left),
    the criterion, each judge's ranking and scores, and where they part ways."""
    def ranking(judgement: dict) -> str:
        order = judgement["ranking"]
        return " > ".join(str(i + 1) for i in order) if order else "(no full ranking)"

    def scores(judgement: dict) -> str:
        values = judgement.get("scores")
        return ", ".join(f"{i}: {v:.3g}" for i, v in enumerate(values, 1)) if values else "-"

    def why(judgement: dict) -> str:
        if not judgement["ranking"]:
            raw = " ".join(str(judgement["raw"]).split())[:200].replace("|", "\\|")
            return f"its answer did not parse: {raw or '(empty)'}"
        return f"puts {judgement['ranking'][0] + 1} first"

    rows = "\n".join(f"| {j['judge']} | {ranking(j)} | {scores(j)} | {why(j)} |"
                     for j in vote.judgements)
    clips = clips_preview(store_url, [c.video for c in cset.candidates],
                          f"candidates 1-{len(cset.candidates)}, numbered in their corners",
                          expires_s)
    return (f"**prompt**: {cset.prompt}\n\n**criterion {vote.criterion_id}**: {vote.criterion}"
            f"\n\n{clips}\n\n| judge | ranking (best first) | scores | why they differ |\n"
            f"|---|---|---|---|\n{rows}")


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
    spec = cfg.finetune
    samples = []
    for row in rows.itertuples():
        target, fps = load_frames(store, row.video_key)
        # One text-to-image agent trains on the first frame; agents trained together get the
        # video (agents/finetune.py gives its first frame to the text-to-image agent).
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
                             on_step=lambda step, loss, factor: factors.append(factor))
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
    """The config's own judges score fresh samples of the fixed held-out prompts × seeds
    (agents/held_out.py), each sample stored as a video; their mean and its interval."""
    from agents.held_out import held_out_scores
    from metrics.stats import bootstrap_mean

    agents = _agents(profile, store_url, weights_key)
    base = _agents(with_checkpoint(with_checkpoint(profile, "text_to_image", None),
                                   "image_to_video", None), store_url, None)
    tuned = (agents[0].weights, agents[1].weights) != (None, None)
    store = open_store(store_url)
    fps = float(profile.image_to_video.fps)
    models = [agent.model_ref for agent in agents]
    videos: list[str] = []

    def keep(video, prompt: str, enhanced: str, seed: int, criterion: int) -> None:
        videos.append(save_video(store, video, fps, provenance(
            "video", ctx.model_copy(update={"prompt": prompt, "enhanced_prompt": enhanced}),
            seed, models, stage="held-out", criterion=criterion)).frames_key)

    scores = held_out_scores(cfg, agents_for(profile).enhancer, agents,
                             base if tuned else None, fps, keep)
    mean, low, high = bootstrap_mean(scores)
    return HeldOutScore(mean=mean, low=low, high=high, scores=scores,
                        judges=[spec.name for spec in cfg.judges], videos=videos)


@task(name="write-report", **CACHED)
def write_report(store_url: str, ctx: RunContext, round_id: str, report: dict) -> str:
    store = open_store(store_url)
    key = store.new_key(f"rounds/{round_id}", ".json")
    return store.put_bytes(key, json.dumps(report, indent=2).encode(), provenance(
        "report", ctx, parents=[k for k in (report.get("dataset_key"), report.get("weights_key"))
                                if k], stage="round-report", round_id=round_id))


@task(name="plot-rounds")
def plot_rounds(store_url: str, ctx: RunContext, reports: list[dict]) -> str:
    """A PNG of the per-round figures (metrics/plots.py) in the store."""
    from metrics.plots import rounds_png

    store = open_store(store_url)
    key = store.new_key("reports", ".png")
    return store.put_bytes(key, rounds_png(reports), provenance(
        "report", ctx, stage="rounds-plot", rounds=[r["round_id"] for r in reports]))


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
