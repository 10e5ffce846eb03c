"""The paper's data-free training loop (§3.2, A.6, A.7) as Prefect flows.

`training_round`: prompts → C candidates per prompt → two judges vote under a random criterion →
agree: accept; disagree: a human picks or rejects (or the unattended rule) → the round's dataset
→ self-modulated fine-tuning in checkpoint-sized chunks → held-out score before/after → report.
`train`: R rounds, each sampling with the weights the round before produced.
"""

from __future__ import annotations

import random
import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from prefect import flow
from prefect.artifacts import create_table_artifact

from configs import load_profile, load_training_config
from configs.ablations import LossWeighting, Modulation
from configs.training import TrainingConfig
from flows.params import (Candidates, PromptCount, Refresh, RoundId, Rounds, RunName, Seed,
                          StoreUrl)
from flows.sampling import SampleJob, sample_all
from storage import Store, open_store
from tasks.artifacts import RunContext
from tasks.review import ReviewPolicy
from tasks.candidates import (CandidateSet, Decision, Vote, decide, generate_prompts,
                              judge_candidates)
from tasks.training import (HeldOutScore, export_weights, finetune_chunk, held_out_score,
                            latest_round, plot_rounds, write_dataset, write_report)
from tasks.weights import trained_together

Unattended = Literal["discard", "judge_a"]


class RoundReport(BaseModel):
    """A round's report, as stored (rounds/<round id>.json) and returned."""

    round_id: str
    config: str
    modulation: Modulation
    unattended: Unattended
    prompts: list[str]
    candidates: int
    agreement_rate: float
    escalations: int = Field(description="prompts whose judges disagreed")
    accepted: int
    human_picks: int
    unattended_picks: int
    discards: int
    losses: list[float]
    modulation_factors: list[float]
    # The held-out score (tasks/training.py): the config's judges over the held-out
    # prompts × seeds; its mean, 95 % bootstrap interval and per-sample scores.
    held_out_before: float
    held_out_after: float
    held_out_before_ci: list[float] | None
    held_out_after_ci: list[float] | None
    held_out_before_scores: list[float]
    held_out_after_scores: list[float]
    held_out_judges: list[str]
    held_out_videos: list[str]
    dataset_key: str
    state_key: str | None
    weights_key: str | None
    step: int
    weights_keys: list[str] = Field(description="every agent's weights (agents trained "
                                    "together export one file each)")
    stage_seconds: dict[str, float]


class RoundResult(BaseModel):
    round_id: str
    store: str
    dataset_key: str
    state_key: str | None
    weights_key: str | None
    step: int
    report_key: str
    report: RoundReport


class TrainResult(BaseModel):
    store: str
    rounds: list[RoundResult]
    plot_key: str


@flow(name="training-round", log_prints=True)
def training_round(
    round_id: RoundId,
    config: str = "tiny",
    store: StoreUrl | None = None,
    seed: Seed = 0,
    start_state: str | None = None,
    start_weights: str | None = None,
    seen_prompts: list[str] = [],  # noqa: B006 - Prefect parameters are copied per run
    review: ReviewPolicy = ReviewPolicy(),
    prompts: PromptCount | None = None,
    candidates: Candidates | None = None,
    modulation: Annotated[Modulation | None, Field(description="override the config's "
                                                   "self-modulation init (ablations)")] = None,
    loss_weighting: Annotated[LossWeighting | None, Field(description="override how the "
                                                          "agents' losses are weighted "
                                                          "(ablations)")] = None,
    unattended: Annotated[Unattended | None, Field(description="override the config's rule for "
                                                   "unreviewed disagreements")] = None,
    draws: Annotated[str | None, Field(max_length=80, description="what seeds the round's "
                                       "prompts, candidates and criteria (default: the round "
                                       "id); ablation variants share it")] = None,
    refresh: Refresh = False,
) -> RoundResult:
    """One round of the data-free loop: prompts → candidates → two judges → (human) → fine-tune."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    # 1. Config, agents' profile, store; seeds and criteria drawn from (seed, round id).
    cfg = configured(config, prompts, candidates, modulation, unattended,
                     loss_weighting=loss_weighting)
    prof = load_profile(cfg.profile)
    cfg.finetune.check_profile(prof)
    opened = open_store(store)
    store_url = opened.url
    ctx = RunContext(sop="training", profile=prof.name)
    rng = random.Random(f"{seed}/{draws or round_id}")

    # 2. Prompts: generated, near-duplicates (and earlier rounds' prompts) removed.
    texts = generate_prompts(prof, cfg, rng.randrange(2**31), seen_prompts)
    lap("prompts")

    # 3. Candidates: C per prompt, each with a recorded seed, sampled with this round's weights
    #    (in this process, or spread over workers: the config's sampling engine).
    jobs = [SampleJob(prompt_index=i, prompt=prompt,
                      seeds=[rng.randrange(2**31) for _ in range(cfg.candidates)])
            for i, prompt in enumerate(texts)]
    csets = sample_all(cfg, store_url, ctx, jobs, start_weights, refresh)
    lap("sampling")

    # 4. Votes: both judges rank each set under one criterion drawn from the paper's ten.
    votes = [judge_candidates(cfg, store_url, cset, rng.randint(1, 10)) for cset in csets]
    lap("judging")

    # 5. Decisions: agreement accepts; disagreement goes to a human (or the unattended rule).
    decisions = [decide(cfg, store_url, cset, vote, review) for cset, vote in zip(csets, votes)]
    dataset_key = write_dataset(store_url, ctx, round_id, csets, votes, decisions)
    lap("decisions")

    # 6. Self-modulated fine-tuning in checkpoint-sized chunks (each chunk a cached task).
    state_key, weights_key = start_state, start_weights
    start_step = step = _step(start_state, opened)
    losses: list[float] = []
    factors: list[float] = []
    if any(d.chosen is not None for d in decisions):
        for until in cfg.finetune.checkpoints():
            chunk = finetune_chunk(prof, cfg, store_url, ctx, [dataset_key], state_key,
                                   start_step + until)
            state_key, step = chunk.state_key, chunk.step
            losses, factors = losses + chunk.losses, factors + chunk.factors
        weights_key = export_weights(store_url, ctx, state_key)
    lap("finetune")

    # 7. Held-out score before and after the round; the report.
    before = held_out_score(prof, cfg, store_url, ctx, start_weights)
    after = held_out_score(prof, cfg, store_url, ctx, weights_key)
    lap("held_out")
    weights_keys = trained_together(opened, weights_key) if weights_key else []
    report = _report(round_id, cfg, texts, votes, decisions, losses, factors, before, after,
                     dataset_key, state_key, weights_key, weights_keys, step, seconds)
    report_key = write_report(store_url, ctx, round_id, report.model_dump(mode="json"))
    _publish(round_id, csets, votes, decisions, report)
    print(f"round {round_id}: {report.accepted} accepted, {report.escalations} escalated, "
          f"{report.discards} discarded; held-out {_scored(before)} → {_scored(after)}")
    return RoundResult(round_id=round_id, store=store_url, dataset_key=dataset_key,
                       state_key=state_key, weights_key=weights_key, step=step,
                       report_key=report_key, report=report)


def configured(config: str, prompts: int | None = None, candidates: int | None = None,
               modulation: Modulation | None = None, unattended: Unattended | None = None,
               held_out_seeds: int | None = None,
               loss_weighting: LossWeighting | None = None) -> TrainingConfig:
    """The named config with the command line's (or an ablation's) overrides, validated again."""
    cfg = load_training_config(config)
    overrides: dict = {k: v for k, v in (("prompts", prompts), ("candidates", candidates),
                                         ("unattended", unattended),
                                         ("held_out_seeds", held_out_seeds)) if v}
    finetune = {k: v for k, v in (("modulation", modulation),
                                  ("loss_weighting", loss_weighting)) if v}
    if finetune:
        overrides["finetune"] = {**cfg.finetune.model_dump(), **finetune}
    if not overrides:
        return cfg
    from pydantic import ValidationError

    from configs.errors import MoraError

    try:
        return TrainingConfig.model_validate({**cfg.model_dump(), **overrides})
    except ValidationError as exc:
        raise MoraError(f"training config {config}: {exc.errors()[0]['msg']}") from None


def _step(state_key: str | None, store: Store) -> int:
    if state_key is None:
        return 0
    return int(store.read_provenance(state_key).params["step"])


def _report(round_id, cfg, prompts, votes, decisions, losses, factors, before, after,
            dataset_key, state_key, weights_key, weights_keys, step, seconds) -> RoundReport:
    outcomes = [d.outcome for d in decisions]
    return RoundReport(
        round_id=round_id, config=cfg.name, modulation=cfg.finetune.modulation,
        unattended=cfg.unattended, prompts=prompts, candidates=cfg.candidates,
        agreement_rate=sum(v.agreed is not None for v in votes) / len(votes),
        escalations=sum(v.agreed is None for v in votes),
        accepted=sum(d.chosen is not None for d in decisions),
        human_picks=outcomes.count("human"), unattended_picks=outcomes.count("unattended"),
        discards=outcomes.count("discarded"), losses=losses, modulation_factors=factors,
        held_out_before=before.mean, held_out_after=after.mean,
        held_out_before_ci=_interval(before), held_out_after_ci=_interval(after),
        held_out_before_scores=before.scores, held_out_after_scores=after.scores,
        held_out_judges=after.judges, held_out_videos=after.videos, dataset_key=dataset_key,
        state_key=state_key, weights_key=weights_key, step=step, weights_keys=weights_keys,
        stage_seconds=seconds)


def _interval(score: HeldOutScore) -> list[float] | None:
    return None if score.low is None else [score.low, score.high]


def _scored(score: HeldOutScore) -> str:
    """``0.7251 [0.7190, 0.7302]``: a held-out score with its interval."""
    interval = "" if score.low is None else f" [{score.low:.4f}, {score.high:.4f}]"
    return f"{score.mean:.4f}{interval}"


def _publish(round_id: str, csets: list[CandidateSet], votes: list[Vote],
             decisions: list[Decision], report: RoundReport) -> None:
    table = [{"prompt": c.prompt, "criterion": v.criterion_id,
              "judge A": str(v.judgements[0]["ranking"]), "judge B": str(v.judgements[1]["ranking"]),
              "decision": d.outcome, "chosen": "-" if d.chosen is None else d.chosen + 1}
             for c, v, d in zip(csets, votes, decisions)]
    table.append({"prompt": "(round)", "criterion": "-",
                  "judge A": f"agreement {report.agreement_rate:.2f}",
                  "judge B": f"final loss {report.losses[-1]:.4f}" if report.losses else "-",
                  "decision": f"held-out {report.held_out_before:.4f} → "
                              f"{report.held_out_after:.4f}", "chosen": report.accepted})
    create_table_artifact(table=table, key=f"training-round-{round_id}".replace("_", "-"),
                          description=f"training round {round_id}")


@flow(name="train", log_prints=True)
def train(
    rounds: Rounds = 3,
    config: str = "tiny",
    store: StoreUrl | None = None,
    seed: Seed = 0,
    name: RunName = "train",
    review: ReviewPolicy = ReviewPolicy(),
    prompts: PromptCount | None = None,
    candidates: Candidates | None = None,
    modulation: Modulation | None = None,
    unattended: Unattended | None = None,
    draws: Annotated[str | None, Field(max_length=40)] = None,
    loss_weighting: LossWeighting | None = None,
    refresh: Refresh = False,
) -> TrainResult:
    """R rounds: each round samples with, and fine-tunes from, the round before's checkpoint."""
    cfg = configured(config, prompts, candidates, modulation, unattended,
                     loss_weighting=loss_weighting)
    opened = open_store(store)
    store_url = opened.url
    results: list[RoundResult] = []
    state_key = weights_key = None
    seen: list[str] = []
    for r in range(1, rounds + 1):
        result = training_round(round_id=f"{name}-r{r}", config=config, store=store_url,
                                seed=seed, start_state=state_key, start_weights=weights_key,
                                seen_prompts=seen, review=review, prompts=prompts,
                                candidates=candidates, modulation=modulation,
                                loss_weighting=loss_weighting,
                                unattended=unattended, draws=draws and f"{draws}-r{r}",
                                refresh=refresh)
        results.append(result)
        state_key, weights_key = result.state_key, result.weights_key
        seen = seen + result.report.prompts
    plot = plot_rounds(store_url, RunContext(sop="training", profile=cfg.profile),
                       [r.report.model_dump(mode="json") for r in results])
    print(f"train: {rounds} round(s); plot → {opened.uri(plot)}")
    return TrainResult(store=store_url, rounds=results, plot_key=plot)


@flow(name="train-round", log_prints=True)
def scheduled_round(
    config: str = "tiny",
    store: StoreUrl | None = None,
    seed: Seed = 0,
    review: ReviewPolicy = ReviewPolicy(),
    refresh: Refresh = False,
) -> RoundResult:
    """One training round per scheduled run, continuing from the newest round in the store."""
    # Named after the run's scheduled time, so a restarted run resumes the round it began.
    from datetime import datetime, timezone

    from prefect.runtime import flow_run

    load_training_config(config)
    store_url = open_store(store).url
    when = flow_run.scheduled_start_time or datetime.now(timezone.utc)
    round_id = f"sched-{when:%Y%m%d-%H%M}"
    latest = latest_round(store_url, exclude=round_id)  # a restarted run resumes as it began
    print(f"round {round_id} continues from {latest.round_id or 'the base weights'}")
    return training_round(round_id=round_id, config=config, store=store_url, seed=seed,
                          start_state=latest.state_key, start_weights=latest.weights_key,
                          seen_prompts=latest.prompts, review=review, refresh=refresh)
