"""Prefect tasks of the data-free training loop (paper §3.2, A.7) after the round's examples
(tasks/candidates.py): the round's dataset, fine-tuning in checkpoint-sized chunks, the
exported weights, held-out scores, reports.

Every task is cached on its inputs (store keys included) with persisted results, so a round
killed at any point and started again with the same round id redoes no finished work.
"""

from __future__ import annotations

import io
import json

from pydantic import BaseModel

from prefect import task

from agents.registry import agents_for
from configs.schema import Profile
from configs.training import TrainingConfig
from storage import open_store
from tasks.artifacts import (RunContext, load_frames, load_image, provenance, put_safetensors,
                             read_safetensors, save_video)
from tasks.candidates import CandidateSet, Decision, Vote
from tasks.cache import CACHED
from tasks.generate import ON_GPU, on_gpu
from tasks.weights import sampling_agents, target_of, with_checkpoint


class ChunkResult(BaseModel, frozen=True):
    state_key: str
    step: int
    losses: list[float]
    factors: list[float]


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
    """The config's own judges score fresh samples of the fixed held-out prompts × seeds
    (agents/held_out.py), each sample stored as a video; their mean and its interval."""
    from agents.held_out import held_out_scores
    from metrics.stats import bootstrap_mean

    agents = sampling_agents(profile, store_url, weights_key)
    base_profile = with_checkpoint(with_checkpoint(profile, "text_to_image", None),
                                   "image_to_video", None)
    base = sampling_agents(base_profile, store_url, None)
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
