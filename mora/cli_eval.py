"""`mora eval`: the twelve metrics of videos beside the paper's tables, or fine-tuned weights
scored on a training config's held-out prompts."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.console import Console

from configs.errors import MoraError
from mora.cli_common import (SOURCE_HELP, ProfileOpt, RefreshOpt, SeedOpt, StoreOpt, check_common, checked,
                             console, local_run, out)


def eval_cmd(
    videos: Optional[list[str]] = typer.Argument(None, metavar="VIDEO",
                                                 help=f"the videos to evaluate: each "
                                                 f"{SOURCE_HELP} (or --weights instead)"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="the prompt the videos were made "
                                         "from (used by the text-conditioned metrics)"),
    fmt: str = typer.Option("table", "--format", help="table | json | csv (json: one record per "
                            "video and metric, on stdout)"),
    task: str = typer.Option("t2v", "--task", help="the paper table to set ours beside: t2v i2v "
                             "extend edit connect digital-world"),
    vbench_export: bool = typer.Option(False, "--vbench-export", help="also copy the videos to "
                                       "vbench/<run>/ in the store, named for VBench's "
                                       "custom_input mode"),
    reference: Optional[str] = typer.Option(None, "--reference", help="extend: the input video "
                                            "the VIDEOs extend (gives TCON)"),
    before: Optional[str] = typer.Option(None, "--before", help="connect: the clip before the "
                                         "transition VIDEOs (with --after, gives Tmean)"),
    after: Optional[str] = typer.Option(None, "--after", help="connect: the clip after them"),
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    weights: Optional[str] = typer.Option(None, "--weights", help="instead of VIDEOs: sample "
                                          "these weights (round:<name>-rK, store://KEY, latest "
                                          "or base) on --config's held-out prompts × seeds and "
                                          "score them as a training round does"),
    config: str = typer.Option("tiny", "--config", help="with --weights: the training config "
                               "whose held-out prompts, seeds, judges and profile are used"),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="with --weights: seeds per "
                                        "held-out prompt [default: the config's]"),
    refresh: bool = RefreshOpt,
) -> None:
    """Evaluate videos: twelve metrics per video, stored as parquet + csv, beside the paper's
    table. With --weights: evaluate fine-tuned weights on a training config's held-out prompts."""
    from flows.params import MAX_VIDEOS, EvalTask, Prompt

    if fmt not in ("table", "json", "csv"):
        raise MoraError(f"--format must be table, json or csv, got '{fmt}'")
    if (weights is None) == (not videos):
        raise MoraError("give VIDEOs to evaluate or --weights" + (", not both" if videos else ""))
    if weights is not None:
        return _eval_weights(weights, config, profile, store, seeds, fmt, refresh)
    checked(EvalTask, task, "--task")
    if prompt is not None:
        checked(Prompt, prompt, "prompt")
    if len(videos) > MAX_VIDEOS:
        raise MoraError(f"at most {MAX_VIDEOS} videos at a time, got {len(videos)}")
    if (before is None) != (after is None):
        raise MoraError("Tmean needs both clips around the transition: give --before and --after")
    # metrics load no profile model
    _, store_url, _ = check_common(profile, store, seed, models=False)
    from storage import open_store
    from storage.inputs import read_input
    from storage.media import decode_input

    opened = open_store(store_url)
    around = {"reference": reference, "before": before, "after": after}
    named = [(source, "video") for source in videos] + [
        (source, name) for name, source in around.items() if source is not None]
    for source, name in named:  # every file checked (and decoded) before the store is touched
        data, suffix, label = read_input(source, opened, name)
        decode_input(data, suffix, "video", f"{name} '{label}'")

    from flows.evaluate import evaluate

    with console.status(f"evaluating {len(videos)} video(s)…"):
        result = local_run(lambda: evaluate(videos=list(videos), prompt=prompt,
                                            store=store_url, task=task,
                                            vbench=vbench_export, refresh=refresh,
                                            **around))()
    _print_records(result.records, fmt)
    if fmt == "table":
        out.print(result.markdown, markup=False, highlight=False)
    where = console if fmt != "table" else out
    shown = _print_results(where, result.store, result.parquet_key, result.csv_key)
    if result.vbench_keys:
        folder = result.vbench_keys[0].rsplit("/", 1)[0]
        where.print(f"vbench custom_input folder: {shown.uri(folder)}", markup=False,
                    highlight=False)
    where.print(f"store: {result.store}", markup=False, highlight=False, soft_wrap=True)


def _eval_weights(weights: str, config: str, profile: Optional[str], store: Optional[str],
                  seeds: Optional[int], fmt: str, refresh: bool) -> None:
    """`mora eval --weights`: the checkpoint checked before any work, then sampled and scored."""
    from flows.params import HeldOutSeeds
    from flows.training import configured

    if seeds is not None:
        checked(HeldOutSeeds, seeds, "--seeds")
    cfg = configured(config, held_out_seeds=seeds)
    _, store_url, _ = check_common(profile or cfg.profile, store, 0, weights=weights)
    from flows.evaluate import evaluate_weights

    with console.status(f"sampling and scoring {weights} on config '{config}'…"):
        result = local_run(lambda: evaluate_weights(weights=weights, config=config,
                                                    profile=profile, store=store_url,
                                                    seeds=seeds, refresh=refresh))()
    _print_records(result.records, fmt)
    where = console if fmt != "table" else out
    score = result.held_out
    interval = "" if score.low is None else f" (95% CI {score.low:.4f} to {score.high:.4f})"
    where.print(f"held-out score of {weights} ({', '.join(result.weights) or 'base weights'}): "
                f"{score.mean:.4f}{interval} over {len(score.scores)} samples, judges "
                f"{' and '.join(score.judges)}", markup=False, highlight=False, soft_wrap=True)
    _print_results(where, result.store, result.parquet_key, result.csv_key)
    where.print(f"store: {result.store}", markup=False, highlight=False, soft_wrap=True)


def _print_results(where: Console, store_url: str, parquet_key: str, csv_key: str):
    from storage import open_store

    shown = open_store(store_url)
    where.print(f"results: {shown.uri(parquet_key)}  and  {shown.uri(csv_key)}",
                markup=False, highlight=False, soft_wrap=True)
    return shown


def _print_records(records: list[dict], fmt: str) -> None:
    """The records (video, metric, value, method, kind) on stdout: JSON, CSV, or a table per
    video."""
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=["video", "metric", "value", "method",
                                                        "kind"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    else:
        from rich.table import Table

        for video in dict.fromkeys(r["video"] for r in records):
            table = Table("metric", "value", "method", "kind", title=video, show_lines=False)
            for r in (r for r in records if r["video"] == video):
                table.add_row(r["metric"], "n/a" if r["value"] is None else f"{r['value']:.4f}",
                              r["method"], r["kind"])
            out.print(table)


