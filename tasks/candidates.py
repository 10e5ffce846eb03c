"""Prefect tasks that make a training round's examples (paper A.6): the prompts, C candidate
videos per prompt, the two judges' votes, and the decision on each set (the judges agree, a
human picks, or the unattended rule). tasks/training.py turns the decisions into the round's
dataset, fine-tunes on it and measures the result.

Every task is cached on its inputs (store keys included) with persisted results, so a round
killed at any point and started again with the same round id redoes no finished work.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel

from prefect import task

from agents.candidates import sample_batches
from agents.registry import agents_for
from configs.schema import Profile
from configs.training import TrainingConfig
from storage import media, open_store
from tasks.artifacts import (RunContext, VideoArtifact, load_frames, provenance, save_image,
                             save_video)
from tasks.cache import CACHED
from tasks.generate import ON_GPU, on_gpu
from tasks.report import clips_preview
from tasks.review import ReviewPolicy, human_pick
from tasks.weights import sampling_agents

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
    text_to_image, image_to_video = sampling_agents(profile, store_url, weights_key)
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
def decide(cfg: TrainingConfig, store_url: str, cset: CandidateSet, vote: Vote,
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
