"""`mora train | ablate | worker`: the data-free training loop, the paper's Table 5 ablations,
and the task workers that sample for them."""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import typer

from configs.errors import MoraError
from mora.cli_common import (RefreshOpt, SeedOpt, StoreOpt, check_models, checked, checked_store,
                             one_line_errors, out, review_policy, run_flow)

PromptsOpt = typer.Option(None, "--prompts", help="P prompts per round [default: the config's]")
CandidatesOpt = typer.Option(None, "--candidates", help="C candidates per prompt "
                             "[default: the config's]")
ConfigOpt = typer.Option("tiny", "--config", help="training config name or YAML path")


def _check_training_options(rounds: int, prompts: Optional[int], candidates: Optional[int],
                            name: str, name_kind: Any, seed: int, config: str) -> None:
    """Every option as the flow's parameter (flows/params.py), then the config with its
    overrides and the models it samples with."""
    from flows.params import Candidates, PromptCount, Rounds, Seed
    from flows.training import configured

    checked(Rounds, rounds, "--rounds")
    if prompts is not None:
        checked(PromptCount, prompts, "--prompts")
    if candidates is not None:
        checked(Candidates, candidates, "--candidates")
    checked(name_kind, name, "--name")
    checked(Seed, seed, "seed")
    cfg = configured(config, prompts, candidates)
    from configs import load_profile

    check_models(load_profile(cfg.profile), ("text_to_image", "image_to_video"))


def train(
    rounds: int = typer.Option(1, "--rounds", help="training rounds (each from the last's weights)"),
    prompts: Optional[int] = PromptsOpt,
    candidates: Optional[int] = CandidatesOpt,
    config: str = ConfigOpt,
    name: str = typer.Option("train", "--name", help="names the rounds (<name>-r1, …); rerun "
                             "with the same name to resume"),
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = typer.Option("auto", "--review", help="ask: a human picks when the judges "
                               "disagree; auto: the config's unattended rule"),
    refresh: bool = RefreshOpt,
) -> None:
    """The data-free training loop: prompts → candidates → two judges → (human) → fine-tune."""
    from flows.params import RunName
    from storage import open_store

    _check_training_options(rounds, prompts, candidates, name, RunName, seed, config)
    store_url = checked_store(store)
    policy = review_policy(review)
    from flows.training import train as train_flow

    result = run_flow(lambda: train_flow(rounds=rounds, config=config, store=store_url,
                                         seed=seed, name=name, review=policy, prompts=prompts,
                                         candidates=candidates, refresh=refresh),
                      f"training: {rounds} round(s), config '{config}'", policy)
    store_ = open_store(result.store)
    for r in result.rounds:
        rep = r.report
        ci = rep.held_out_after_ci
        out.print(f"{r.round_id}: accepted {rep.accepted}/{len(rep.prompts)}, agreement "
                  f"{rep.agreement_rate:.2f}, held-out {rep.held_out_before:.4f} → "
                  f"{rep.held_out_after:.4f}" + (f" [95% CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci
                                                 else "")
                  + f", dataset {r.dataset_key}, weights {r.weights_key}")
    out.print(f"plot: {store_.uri(result.plot_key)}")
    out.print(f"store: {result.store}")


def ablate(
    variants: str = typer.Option("full,no-human,no-modulation,random-init", "--variants",
                                 help="comma-separated Table 5 variants: full no-human "
                                 "no-modulation random-init; and equal-weights (agents "
                                 "trained together: losses not weighted by the modulation "
                                 "factor)"),
    rounds: int = typer.Option(1, "--rounds", help="training rounds per variant"),
    prompts: Optional[int] = PromptsOpt,
    candidates: Optional[int] = CandidatesOpt,
    config: str = ConfigOpt,
    name: str = typer.Option("ablation", "--name", help="names the variants' rounds "
                             "(<name>-<variant>-r1, …); rerun with the same name to resume"),
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = typer.Option("auto", "--review", help="ask: a human settles the judges' "
                               "disagreements in the variants with human review"),
    refresh: bool = RefreshOpt,
) -> None:
    """The paper's Table 5 ablations: train each variant, evaluate its samples, print the table."""
    from configs.ablations import EXTRA_VARIANTS, PAPER_VARIANTS
    from flows.params import AblationName

    known = {v.name: v for v in (*PAPER_VARIANTS, *EXTRA_VARIANTS)}
    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in known]
    if not chosen or unknown:
        raise MoraError(f"--variants must name some of {' '.join(known)}, got '{variants}'")
    if len(set(chosen)) != len(chosen):
        raise MoraError(f"--variants names a variant twice: '{variants}'")
    _check_training_options(rounds, prompts, candidates, name, AblationName, seed, config)
    store_url = checked_store(store)
    policy = review_policy(review)
    from flows.ablations import ablations
    from storage import open_store

    result = run_flow(lambda: ablations(variants=[known[v] for v in chosen], config=config,
                                        rounds=rounds, store=store_url, seed=seed, name=name,
                                        review=policy, prompts=prompts, candidates=candidates,
                                        refresh=refresh),
                      f"ablations: {len(chosen)} variant(s), config '{config}'", policy)
    sys.stdout.write(result.markdown + "\n")  # markdown as is: made to be pasted
    store_ = open_store(result.store)
    out.print(f"table: {store_.uri(result.parquet_key)} (and .csv)")
    out.print(f"store: {result.store}")


def worker(
    limit: int = typer.Option(1, "--limit", help="tasks run at once (1 per GPU)"),
) -> None:
    """Serve GPU tasks until stopped: the SOP flows' (deployed runs with
    MORA_GPU_TASKS=task-workers) and a training round's sampling (config `sampling.engine:
    task-workers`); models stay loaded from one run to the next. Start one per GPU, each with its
    own CUDA_VISIBLE_DEVICES, against a Prefect server (`mora server start` or PREFECT_API_URL)."""
    if not 1 <= limit <= 64:
        raise MoraError(f"--limit must be between 1 and 64, got {limit}")
    if not os.environ.get("PREFECT_API_URL"):
        raise MoraError("mora worker needs a Prefect server: set PREFECT_API_URL")
    from prefect.task_worker import serve

    from configs.settings import cache_enabled
    from tasks.generate import SOP_GPU_TASKS

    cache_enabled()  # a bad MORA_CACHE fails here, not in every task it serves
    one_line_errors()  # a task's MoraError is one line here too (its run's logs keep the rest)
    from tasks.candidates import sample_candidates

    tasks = [*SOP_GPU_TASKS, sample_candidates]
    out.print(f"serving {', '.join(t.name for t in tasks)} (limit {limit}, "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})")
    serve(*tasks, limit=limit)
