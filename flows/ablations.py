"""The paper's Table 5 ablations (§4.3): each variant trained through the data-free loop from
the same base weights and seed, then its text-to-video samples on the same prompts and seeds
evaluated, set beside the paper's published ablation rows."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from prefect import flow, get_run_logger

from configs import load_profile
from configs.ablations import PAPER_VARIANTS, AblationVariant
from flows.params import AblationName, Candidates, PromptCount, Refresh, Rounds, Seed, StoreUrl
from flows.training import TrainResult, configured, train
from metrics.paper_tables import ablation_markdown
from storage import open_store
from tasks.artifacts import RunContext
from tasks.evaluate import evaluate_video, publish_markdown, write_results
from tasks.review import ReviewPolicy
from tasks.candidates import sample_candidates


class VariantResult(BaseModel):
    name: str
    label: str
    review: str = Field(description="how judge disagreements were settled in its rounds")
    modulation: str
    weights_key: str | None = Field(description="the weights its samples were drawn with "
                                                "(None: nothing was accepted, base weights)")
    accepted: int = Field(description="training examples accepted over all its rounds")
    final_loss: float | None
    videos: list[str] = Field(description="the evaluated samples' frame keys")


class AblationResult(BaseModel):
    store: str
    variants: list[VariantResult]
    records: list[dict[str, Any]] = Field(description="metric records (tasks/evaluate.py) of "
                                          "every evaluated sample; 'video' is '<variant>/"
                                          "<prompt number>'")
    parquet_key: str
    csv_key: str
    markdown: str = Field(description="ours per variant beside the paper's Table 5")


@flow(name="ablations", log_prints=True)
def ablations(
    variants: Annotated[list[AblationVariant], Field(min_length=1, max_length=8)] =
        list(PAPER_VARIANTS),  # noqa: B006 - Prefect parameters are copied per run
    config: str = "tiny",
    rounds: Rounds = 1,
    store: StoreUrl | None = None,
    seed: Seed = 0,
    name: AblationName = "ablation",
    review: ReviewPolicy = ReviewPolicy(),
    prompts: PromptCount | None = None,
    candidates: Candidates | None = None,
    eval_prompts: Annotated[list[str] | None, Field(min_length=1, max_length=1000, description=
                            "text-to-video prompts every variant is evaluated on (default: the "
                            "config's held-out prompts)")] = None,
    refresh: Refresh = False,
) -> AblationResult:
    """The paper's Table 5: each variant trained from the same base, its samples evaluated."""
    logger = get_run_logger()
    # 1. Everything checked before any work: config per variant, store, distinct names.
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must differ, got {names}")
    configs = {v.name: configured(config, prompts, candidates, v.modulation, _unattended(v),
                                  loss_weighting=v.loss_weighting)
               for v in variants}
    store_url = open_store(store).url
    base = configs[names[0]]
    suite = eval_prompts or list(base.held_out_prompts)
    ctx = RunContext(sop="ablations", profile=base.profile)

    # 2. Each variant through the training loop from the base weights, with the same random
    #    draws (prompts, candidate seeds, criteria): only the variant's setting differs.
    trained = {v.name: train(rounds=rounds, config=config, store=store_url, seed=seed,
                             name=f"{name}-{v.name}", review=_review(v, review), prompts=prompts,
                             candidates=candidates, modulation=v.modulation,
                             loss_weighting=v.loss_weighting,
                             unattended=_unattended(v), draws=name, refresh=refresh)
               for v in variants}

    # 3. Each variant's samples on the evaluation prompts (same seeds for all), then the metrics.
    results, records = [], []
    for v in variants:
        cfg, run = configs[v.name], trained[v.name]
        weights_key = run.rounds[-1].weights_key
        samples = [sample_candidates(load_profile(cfg.profile), cfg, store_url, ctx, i, prompt,
                                     [base.held_out_seed + i], weights_key)
                   for i, prompt in enumerate(suite)]
        videos = [s.candidates[0].video.frames_key for s in samples]
        records += [rec for i, (key, prompt) in enumerate(zip(videos, suite))
                    for rec in evaluate_video(store_url, key, prompt, label=f"{v.name}/{i + 1}")]
        results.append(_variant_result(v, review, cfg.finetune.modulation, run, videos))

    # 4. The table: parquet + csv in the store, ours per variant beside the paper's Table 5.
    tables = write_results(store_url, ctx, records, [k for r in results for k in r.videos])
    markdown = publish_markdown(ablation_markdown(
        [(f"{r.label} [{r.name}]", [rec for rec in records
                                    if rec["video"].startswith(f"{r.name}/")])
         for r in results]) + _settings_note(results, rounds, len(suite)), key="mora-ablations")
    logger.info("ablations: %d variant(s) × %d prompt(s) → %s", len(variants), len(suite),
                open_store(store_url).uri(tables.parquet_key))
    return AblationResult(store=store_url, variants=results, records=records,
                          parquet_key=tables.parquet_key, csv_key=tables.csv_key,
                          markdown=markdown)


def _review(variant: AblationVariant, review: ReviewPolicy) -> ReviewPolicy:
    return review if variant.human_review else ReviewPolicy(mode="auto")


def _unattended(variant: AblationVariant):
    """Without human review the judges' pick stands (judge A's, when they disagree)."""
    return None if variant.human_review else "judge_a"


def _variant_result(variant: AblationVariant, review: ReviewPolicy, modulation: str,
                    run: TrainResult, videos: list[str]) -> VariantResult:
    reports = [r.report for r in run.rounds]
    losses = [loss for rep in reports for loss in rep.losses]
    settled = "reviewer" if variant.human_review and review.mode == "ask" else (
        "judge A's pick" if reports[-1].unattended == "judge_a" else "discarded")
    return VariantResult(name=variant.name, label=variant.label, review=settled,
                         modulation=modulation, weights_key=run.rounds[-1].weights_key,
                         accepted=sum(rep.accepted for rep in reports),
                         final_loss=losses[-1] if losses else None, videos=videos)


def _settings_note(results: list[VariantResult], rounds: int, prompts: int) -> str:
    rows = "\n".join(f"| {r.name} | {r.review} | {r.modulation} | {r.accepted} | "
                     f"{'-' if r.final_loss is None else f'{r.final_loss:.4f}'} |"
                     for r in results)
    return (f"\n\nEach variant: {rounds} training round(s) from the base weights, then "
            f"{prompts} text-to-video sample(s) on the same prompts and seeds.\n\n"
            "| variant | judge disagreements | modulation | accepted | final loss |\n"
            f"|---|---|---|---|---|\n{rows}")
