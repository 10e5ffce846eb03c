"""The `mora` command line (typer). Heavy libraries are imported inside commands only."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mora.cli_review import review_app, run_with_terminal_review
from mora.cli_server import server_app
from configs.errors import MoraError
from mora.local_server import use_running_server
from configs.settings import default_profile

app = typer.Typer(help="Mora: multi-agent video generation as Prefect workflows.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="The offline tiny model zoo and the models profiles name.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(review_app, name="review")
app.add_typer(server_app, name="server")

console = Console(stderr=True)
out = Console(soft_wrap=True)

ProfileOpt = typer.Option(None, "--profile", help="profile name or YAML path [default: tiny]")
StoreOpt = typer.Option(None, "--store", help="local folder or s3://bucket/prefix "
                        "[default: $MORA_STORE or ./mora-store]")
SeedOpt = typer.Option(0, "--seed", help="random seed (recorded in provenance)")
WeightsOpt = typer.Option(None, "--weights", help="fine-tuned weights from the store: "
                          "round:<name>-rK, store://KEY or latest; base: the profile's base "
                          "weights [default: as the profile says]")


def _checked_out_path(path: Optional[Path]) -> Optional[Path]:
    """--out must be an .mp4 in an existing, writable folder; checked before any work."""
    if path is None:
        return None
    if path.suffix.lower() != ".mp4":
        raise MoraError(f"--out must end in .mp4: {path}")
    folder = path.expanduser().resolve().parent
    if not folder.is_dir():
        raise MoraError(f"--out folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise MoraError(f"--out folder is not writable: {folder}")
    if path.is_dir():
        raise MoraError(f"--out is a folder: {path}")
    return path


def _common(profile: Optional[str], store: Optional[str], seed: int, models: bool = True,
            weights: Optional[str] = None):
    """Validate the options every command takes; returns (profile name, store url, profile).

    Before any work: the profile's weights must be loadable (offline: in the HF cache; local
    folders: safetensors), the store reachable and writable, and the fine-tuned weights the
    profile or ``--weights`` names in the store and trained on the profile's model."""
    from agents.base import check_seed
    from configs import load_profile

    check_seed(seed)
    prof = load_profile(profile or default_profile())
    if models:
        _check_models(prof, ("text_to_image", "image_to_image", "image_to_video", "connector"))
    store_url = _checked_store(store)
    if models or weights is not None:
        from tasks.weights import apply_weights

        prof = apply_weights(prof, store_url, weights)[0]
    return profile or default_profile(), store_url, prof


def _check_models(prof, roles: tuple[str, ...]) -> None:
    """The agents' weights are loadable (offline: in the HF cache; local folders: safetensors)."""
    from agents.loading import check_weights_present

    for role in roles:
        check_weights_present(getattr(prof, role))
    if any(getattr(prof, role).model.startswith("tiny:") for role in roles):
        _check_mora_home()  # tiny models are built there on first use
    from agents.random_weights import is_random

    if any(is_random(getattr(prof, role).model) for role in roles):
        console.print(f"note: profile {prof.name} runs on random weights: outputs are noise",
                      markup=False, highlight=False)


def _checked_store(url: Optional[str]) -> str:
    """The store's URL once it is known to take writes: S3 (bucket and credentials, one HEAD
    request) or a local folder that exists or can be made. Nothing is created here."""
    from storage import open_store

    store = open_store(url)
    if hasattr(store, "check"):
        store.check()
        return store.url
    _check_writable_folder(Path(store.url), f"store {store.url}")
    return store.url


def _check_writable_folder(path: Path, what: str) -> None:
    """``path`` is a writable folder, or could be made as one (nothing is created here)."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise MoraError(f"{what} cannot be written ({folder} is not a writable folder)")


def _check_mora_home() -> None:
    from configs.settings import mora_home

    _check_writable_folder(mora_home() / "tiny", f"MORA_HOME {mora_home()}")


@app.command()
def t2v(
    prompt: str = typer.Argument(..., help="what the video shows"),
    segments: int = typer.Option(1, "--segments", help="clips chained from each last frame"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="also copy the mp4 here"),
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = typer.Option("auto", "--review", help="auto: never pause; ask: pause after "
                               "each stage and ask here (or answer with `mora review`)"),
    weights: Optional[str] = WeightsOpt,
) -> None:
    """Text-to-video: enhance → first frame → image-to-video, SEGMENTS times."""
    from agents.base import check_text

    check_text("prompt", prompt)
    if segments < 1 or segments > 32:
        raise MoraError(f"--segments must be between 1 and 32, got {segments}")
    out_path = _checked_out_path(out_file)
    profile_name, store_url, _ = _common(profile, store, seed, weights=weights)

    policy = _review_policy(review)
    from flows.text_to_video import text_to_video

    result = _run_flow(lambda: text_to_video(prompt=prompt, segments=segments,
                                             profile=profile_name, store=store_url, seed=seed,
                                             weights=weights, review=policy),
                       f"text-to-video on profile '{profile_name}' ({segments} segment(s))", policy)
    _report_video(result.store, result.video.mp4_key, out_path,
                  f"{result.video.num_frames} frames, {result.video.width}x"
                  f"{result.video.height} @ {result.video.fps:g} fps")


def _review_policy(mode: str):
    from tasks.review import ReviewPolicy

    if mode not in ("auto", "ask"):
        raise MoraError(f"--review must be auto or ask, got '{mode}'")
    return ReviewPolicy(mode=mode, poll_interval_s=1)


def _local_run(start):
    """``start`` (a flow call), without flow heartbeats when no Prefect server is configured.

    Heartbeats let a long-lived server notice crashed runs; the temporary server of a local run
    dies with this process, and the heartbeat thread costs up to a second at every flow's end
    (Prefect joins it while it sleeps in 1 s steps). Call this in the main thread: it starts
    that temporary server, which ends when the thread that started it ends (the flow itself may
    run in another thread, see mora/cli_review.py)."""
    if os.environ.get("PREFECT_API_URL"):
        return start
    from mora.local_server import start_temporary_server

    start_temporary_server()  # dies with this process, however it dies

    def run():
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            return start()

    return run


def _run_flow(start, what: str, policy):
    """Run a flow call; with review=ask, answer its pauses on this terminal."""
    start = _local_run(start)
    if policy.mode == "auto":
        from mora.cli_progress import step_bars

        with step_bars(console, what):
            return start()
    import uuid

    import prefect

    tag = f"mora-cli-{uuid.uuid4().hex[:12]}"

    def tagged():
        with prefect.tags("mora", tag):  # "mora": what the review-waiting automation matches
            return start()

    return run_with_terminal_review(tagged, tag, interactive=sys.stdin.isatty())


def _report_video(store_url: str, key: str, out_path: Optional[Path], summary: str) -> None:
    from storage import open_store

    store = open_store(store_url)
    if out_path is not None:
        store.download(key, out_path)
        out.print(f"video: {out_path}  ({summary})")
    else:
        out.print(f"video: {store.uri(key)}  ({summary})")
    out.print(f"store key: {key}  in {store_url}")


# --- The other SOPs (SPEC §2): validate every input before any work, run the flow, report ----

OutOpt = typer.Option(None, "--out", help="also copy the mp4 here")
ReviewOpt = typer.Option("auto", "--review", help="auto: never pause; ask: pause after each "
                         "stage and ask here (or answer with `mora review`)")
_SOURCE_HELP = "a file, store://KEY for an artifact in the store, or s3://BUCKET/KEY"


def _run_sop(flow: str, out_file: Optional[Path], profile: Optional[str], store: Optional[str],
             seed: int, review: str, weights: Optional[str], texts: tuple[str, ...] = (),
             files: Optional[dict[str, str]] = None, **params: Optional[str]) -> None:
    """The body of every SOP command: ``flow`` is "module:function"; ``texts`` name the
    ``params`` that are free text, ``files`` map the ``params`` that are input files to
    "image" or "video". Each is checked (and each file decoded) before the store is touched."""
    from agents.base import check_text

    for name in texts:
        if params[name] is not None:
            check_text(name.replace("_", " "), params[name])
    out_path = _checked_out_path(out_file)
    profile_name, store_url, _ = _common(profile, store, seed, weights=weights)
    policy = _review_policy(review)
    if files:
        from storage import open_store
        from storage.inputs import read_input
        from storage.media import decode_input

        opened = open_store(store_url)
        for name, kind in files.items():
            if params[name] is not None:
                data, suffix, label = read_input(params[name], opened, name.replace("_", " "))
                decode_input(data, suffix, kind, f"{name.replace('_', ' ')} '{label}'")

    import importlib

    module, _, function = flow.partition(":")
    run = getattr(importlib.import_module(module), function)
    result = _run_flow(lambda: run(profile=profile_name, store=store_url, seed=seed,
                                   weights=weights, review=policy, **params),
                       f"{run.name} on profile '{profile_name}'", policy)
    video = result.video
    _report_video(result.store, video.mp4_key, out_path, f"{video.num_frames} frames, "
                  f"{video.width}x{video.height} @ {video.fps:g} fps")


@app.command()
def i2v(
    image: str = typer.Argument(..., help=f"the first frame: {_SOURCE_HELP}"),
    prompt: Optional[str] = typer.Argument(None, help="what happens (enhanced; used where the "
                                           "video model takes text)"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
) -> None:
    """Image-to-video: animate IMAGE."""
    _run_sop("flows.image_to_video:image_to_video", out_file, profile, store, seed, review, weights,
             texts=("prompt",), files={"image": "image"}, image=image, prompt=prompt)


@app.command()
def extend(
    video: str = typer.Argument(..., help=f"the video to continue: {_SOURCE_HELP}"),
    prompt: Optional[str] = typer.Argument(None, help="what happens next"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
) -> None:
    """Extend VIDEO: new frames from its last frame, appended to it."""
    _run_sop("flows.extend_video:extend_video", out_file, profile, store, seed, review, weights,
             texts=("prompt",), files={"video": "video"}, video=video, prompt=prompt)


@app.command()
def edit(
    video: str = typer.Argument(..., help=f"the video to edit: {_SOURCE_HELP}"),
    instruction: str = typer.Argument(..., help="what to change in it"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
) -> None:
    """Video-to-video edit: edit VIDEO's first frame by INSTRUCTION, then animate it."""
    _run_sop("flows.edit_video:edit_video", out_file, profile, store, seed, review, weights,
             texts=("instruction",), files={"video": "video"}, video=video,
             instruction=instruction)


@app.command("connect")
def connect_cmd(
    video_a: str = typer.Argument(..., help=f"the first video: {_SOURCE_HELP}"),
    video_b: str = typer.Argument(..., help=f"the second video: {_SOURCE_HELP}"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
) -> None:
    """Connect VIDEO_A to VIDEO_B with a generated transition (output at VIDEO_A's size and fps)."""
    _run_sop("flows.connect_videos:connect_videos", out_file, profile, store, seed, review,
             weights, files={"video_a": "video", "video_b": "video"}, video_a=video_a, video_b=video_b)


@app.command("digital-world")
def digital_world_cmd(
    prompt: Optional[str] = typer.Argument(None, help='a scene; "in digital world style" is '
                                           "appended"),
    video: Optional[str] = typer.Option(None, "--video", help="restyle this video's first "
                                        f"frame instead ({_SOURCE_HELP})"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
) -> None:
    """Digital world: PROMPT in digital world style, or --video VIDEO restyled."""
    if (prompt is None) == (video is None):
        raise MoraError("give a PROMPT or --video VIDEO" + (", not both" if video else ""))
    _run_sop("flows.digital_world:digital_world", out_file, profile, store, seed, review, weights,
             texts=("prompt",), files={"video": "video"}, prompt=prompt, video=video)


def _check_training_options(rounds: int, prompts: Optional[int], candidates: Optional[int],
                            name: str, seed: int, config: str, max_name: int = 36) -> None:
    import re

    from agents.base import check_seed
    from flows.training import configured

    if not 1 <= rounds <= 100:
        raise MoraError(f"--rounds must be between 1 and 100, got {rounds}")
    if prompts is not None and prompts < 1:
        raise MoraError(f"--prompts must be at least 1, got {prompts}")
    if candidates is not None and not 2 <= candidates <= 16:
        raise MoraError(f"--candidates must be between 2 and 16, got {candidates}")
    if not re.fullmatch(rf"[a-z0-9][a-z0-9_-]{{0,{max_name - 1}}}", name):
        raise MoraError(f"--name must be lowercase letters, digits, '-' or '_' (at most "
                        f"{max_name}), got '{name}'")
    check_seed(seed)
    cfg = configured(config, prompts, candidates)
    from configs import load_profile

    _check_models(load_profile(cfg.profile), ("text_to_image", "image_to_video"))


@app.command()
def train(
    rounds: int = typer.Option(1, "--rounds", help="training rounds (each from the last's weights)"),
    prompts: Optional[int] = typer.Option(None, "--prompts", help="P prompts per round "
                                          "[default: the config's]"),
    candidates: Optional[int] = typer.Option(None, "--candidates", help="C candidates per prompt "
                                             "[default: the config's]"),
    config: str = typer.Option("tiny", "--config", help="training config name or YAML path"),
    name: str = typer.Option("train", "--name", help="names the rounds (<name>-r1, …); rerun "
                             "with the same name to resume"),
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = typer.Option("auto", "--review", help="ask: a human picks when the judges "
                               "disagree; auto: the config's unattended rule"),
) -> None:
    """The data-free training loop: prompts → candidates → two judges → (human) → fine-tune."""
    from storage import open_store

    _check_training_options(rounds, prompts, candidates, name, seed, config)
    store_url = _checked_store(store)
    policy = _review_policy(review)
    from flows.training import train as train_flow

    result = _run_flow(lambda: train_flow(rounds=rounds, config=config, store=store_url,
                                          seed=seed, name=name, review=policy, prompts=prompts,
                                          candidates=candidates),
                       f"training: {rounds} round(s), config '{config}'", policy)
    store_ = open_store(result.store)
    for r in result.rounds:
        rep = r.report
        ci = rep.get("held_out_after_ci")
        out.print(f"{r.round_id}: accepted {rep['accepted']}/{len(rep['prompts'])}, agreement "
                  f"{rep['agreement_rate']:.2f}, held-out {rep['held_out_before']:.4f} → "
                  f"{rep['held_out_after']:.4f}" + (f" [95% CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci
                                                     else "")
                  + f", dataset {r.dataset_key}, weights {r.weights_key}")
    out.print(f"plot: {store_.uri(result.plot_key)}")
    out.print(f"store: {result.store}")


@app.command()
def ablate(
    variants: str = typer.Option("full,no-human,no-modulation,random-init", "--variants",
                                 help="comma-separated Table 5 variants: full no-human "
                                 "no-modulation random-init; and equal-weights (agents "
                                 "trained together: losses not weighted by the modulation "
                                 "factor)"),
    rounds: int = typer.Option(1, "--rounds", help="training rounds per variant"),
    prompts: Optional[int] = typer.Option(None, "--prompts", help="P prompts per round "
                                          "[default: the config's]"),
    candidates: Optional[int] = typer.Option(None, "--candidates", help="C candidates per prompt "
                                             "[default: the config's]"),
    config: str = typer.Option("tiny", "--config", help="training config name or YAML path"),
    name: str = typer.Option("ablation", "--name", help="names the variants' rounds "
                             "(<name>-<variant>-r1, …); rerun with the same name to resume"),
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = typer.Option("auto", "--review", help="ask: a human settles the judges' "
                               "disagreements in the variants with human review"),
) -> None:
    """The paper's Table 5 ablations: train each variant, evaluate its samples, print the table."""
    from configs.ablations import EXTRA_VARIANTS, PAPER_VARIANTS

    known = {v.name: v for v in (*PAPER_VARIANTS, *EXTRA_VARIANTS)}
    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in known]
    if not chosen or unknown:
        raise MoraError(f"--variants must name some of {' '.join(known)}, got '{variants}'")
    if len(set(chosen)) != len(chosen):
        raise MoraError(f"--variants names a variant twice: '{variants}'")
    _check_training_options(rounds, prompts, candidates, name, seed, config, max_name=20)
    store_url = _checked_store(store)
    policy = _review_policy(review)
    from flows.ablations import ablations
    from storage import open_store

    result = _run_flow(lambda: ablations(variants=[known[v] for v in chosen], config=config,
                                         rounds=rounds, store=store_url, seed=seed, name=name,
                                         review=policy, prompts=prompts, candidates=candidates),
                       f"ablations: {len(chosen)} variant(s), config '{config}'", policy)
    sys.stdout.write(result.markdown + "\n")  # markdown as is: made to be pasted
    store_ = open_store(result.store)
    out.print(f"table: {store_.uri(result.parquet_key)} (and .csv)")
    out.print(f"store: {result.store}")


@app.command()
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

    from tasks.generate import SOP_GPU_TASKS
    from tasks.candidates import sample_candidates

    tasks = [*SOP_GPU_TASKS, sample_candidates]
    out.print(f"serving {', '.join(t.name for t in tasks)} (limit {limit}, "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})")
    serve(*tasks, limit=limit)


@app.command("eval")
def eval_cmd(
    videos: Optional[list[str]] = typer.Argument(None, metavar="VIDEO",
                                                 help=f"the videos to evaluate: each "
                                                 f"{_SOURCE_HELP} (or --weights instead)"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="the prompt the videos were made "
                                         "from (used by the text-conditioned metrics)"),
    fmt: str = typer.Option("table", "--format", help="table | json | csv (json: SPEC §6 records "
                            "on stdout)"),
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
) -> None:
    """Evaluate videos: SPEC §4 metrics per video, stored as parquet + csv, beside the paper's
    table. With --weights: evaluate fine-tuned weights on a training config's held-out prompts."""
    from agents.base import check_text

    if fmt not in ("table", "json", "csv"):
        raise MoraError(f"--format must be table, json or csv, got '{fmt}'")
    if (weights is None) == (not videos):
        raise MoraError("give VIDEOs to evaluate or --weights" + (", not both" if videos else ""))
    if weights is not None:
        return _eval_weights(weights, config, profile, store, seeds, fmt)
    tasks = ("t2v", "i2v", "extend", "edit", "connect", "digital-world")
    if task not in tasks:
        raise MoraError(f"--task must be one of {' '.join(tasks)}, got '{task}'")
    if prompt is not None:
        check_text("prompt", prompt)
    if len(videos) > 1000:
        raise MoraError(f"at most 1000 videos at a time, got {len(videos)}")
    if (before is None) != (after is None):
        raise MoraError("Tmean needs both clips around the transition: give --before and --after")
    _, store_url, _ = _common(profile, store, seed, models=False)  # metrics load no profile model
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
        result = _local_run(lambda: evaluate(videos=list(videos), prompt=prompt,
                                             store=store_url, task=task,
                                             vbench=vbench_export, **around))()
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
                  seeds: Optional[int], fmt: str) -> None:
    """`mora eval --weights`: the checkpoint checked before any work, then sampled and scored."""
    from flows.training import configured

    if seeds is not None and not 1 <= seeds <= 32:
        raise MoraError(f"--seeds must be between 1 and 32, got {seeds}")
    cfg = configured(config, held_out_seeds=seeds)
    _, store_url, _ = _common(profile or cfg.profile, store, 0, weights=weights)
    from flows.evaluate import evaluate_weights

    with console.status(f"sampling and scoring {weights} on config '{config}'…"):
        result = _local_run(lambda: evaluate_weights(weights=weights, config=config,
                                                     profile=profile, store=store_url,
                                                     seeds=seeds))()
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
    """SPEC §6 records on stdout: JSON, CSV, or a table per video."""
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


@models_app.command("build-tiny")
def build_tiny(force: bool = typer.Option(False, "--force", help="rebuild even if present")) -> None:
    """Build the offline tiny models under $MORA_HOME/tiny (idempotent)."""
    from agents.tiny import TINY_MODELS, ensure_tiny_model, tiny_model_dir
    from configs.settings import mora_home

    _check_mora_home()
    with console.status("building tiny models…"):
        if force:
            from agents.tiny import build_tiny_zoo

            build_tiny_zoo(force=True)
        for name in TINY_MODELS:
            ensure_tiny_model(name)
            out.print(f"tiny:{name}  {tiny_model_dir(name)}")
    out.print(f"tiny models ready in {mora_home() / 'tiny'}")


@models_app.command("build-random")
def build_random(
    profile: str = typer.Argument(..., help="a GPU profile, e.g. sd3-svd"),
    dtype: Optional[str] = typer.Option(None, help="weights dtype (default: the profile's)"),
    max_gb: float = typer.Option(12.0, "--max-gb", help="skip models whose weights need more"),
    force: bool = typer.Option(False, "--force", help="rebuild even if present"),
) -> None:
    """Build PROFILE's models at their published architectures with random weights (offline)."""
    from agents.random_weights import build_random_profile

    _check_mora_home()
    shown = lambda r: out.print(f"{r.model}  {r.folder or '-'}  {r.reason}",  # noqa: E731
                                markup=False, highlight=False, soft_wrap=True)
    with console.status(f"building {profile} at real size with random weights…"):
        path, _ = build_random_profile(profile, dtype, max_gb, force=force, on_model=shown)
    out.print(f"random weights (outputs are noise): --profile {path}", markup=False,
              highlight=False, soft_wrap=True)


@models_app.command("list")
def list_models(store: Optional[str] = typer.Option(None, "--store", help="also list the "
                                                    "trained checkpoints in this store "
                                                    "[default: $MORA_STORE or ./mora-store, "
                                                    "if it exists]")) -> None:
    """Every profile's models and whether their weights are on this machine; the fine-tuned
    checkpoints of the store (usable as --weights)."""
    from rich.table import Table

    from storage import open_store

    opened = open_store(store)  # a bad store URL fails before anything is printed

    from configs import list_profiles, load_profile
    from mora.model_status import weights_status

    table = Table("profile", "agent", "pipeline", "model", "local")
    for name in list_profiles():
        prof = load_profile(name)
        for role in ("text_to_image", "image_to_image", "image_to_video", "connector"):
            spec = getattr(prof, role)
            table.add_row(name, role, spec.pipeline, spec.model, weights_status(spec.model))
    out.print(table)
    _list_checkpoints(opened, explicit=store is not None)


def _list_checkpoints(opened, explicit: bool) -> None:
    from rich.table import Table

    from tasks.weights import list_checkpoints

    if not explicit and not opened.list("checkpoints/"):
        return  # the default store: nothing trained there (or no store at all)
    table = Table("weights", "round", "agent", "model", "step", "loss", "held-out",
                  title=f"trained checkpoints in {opened.url}")
    for c in list_checkpoints(opened.url):
        table.add_row(f"store://{c.key}", f"round:{c.round_id}" if c.round_id else "-",
                      c.target, c.model, "-" if c.step is None else str(c.step),
                      "-" if c.loss is None else f"{c.loss:.4f}",
                      "-" if c.held_out is None else f"{c.held_out:.4f}")
    out.print(table)


def _click_exceptions():
    try:  # typer >= 0.26 vendors click
        from typer._click import exceptions
    except ImportError:  # older typer runs on click itself
        from click import exceptions
    return exceptions


def main() -> None:
    """Console entry point: user errors become one `error:` line and exit code 2."""
    # The temporary Prefect server of a local run would otherwise start a telemetry service
    # that, on a machine without network, fails with a traceback (set it to true to keep it).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Its first start creates the database; 20 s (Prefect's default) is short on a busy 2-core box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    click = _click_exceptions()
    try:
        use_running_server()  # `mora server start`'s, unless PREFECT_API_URL names another
        code = app(standalone_mode=False)  # a `typer.Exit(n)` comes back as n
        if isinstance(code, int) and code:
            sys.exit(code)
    except MoraError as exc:
        _fail(str(exc), 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


def _fail(message: str, code: int) -> None:
    console.print(f"error: {' '.join(message.split())}", markup=False, highlight=False,
                  soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
