"""`mora t2v | i2v | extend | edit | connect | digital-world`: the paper's SOPs (A.3). Each
validates every input before any work, runs its flow and reports the video."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from configs.errors import MoraError
from mora.cli_common import (SOURCE_HELP, ProfileOpt, RefreshOpt, SeedOpt, StoreOpt, WeightsOpt,
                             check_common, check_prompt_fits, checked, checked_out_path,
                             report_video, review_policy, run_flow)

OutOpt = typer.Option(None, "--out", help="also copy the mp4 here")
ReviewOpt = typer.Option("auto", "--review", help="auto: never pause; ask: pause after each "
                         "stage and ask here (or answer with `mora review`)")


def t2v(
    prompt: str = typer.Argument(..., help="what the video shows"),
    segments: int = typer.Option(1, "--segments", help="clips chained from each last frame"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
    refresh: bool = RefreshOpt,
) -> None:
    """Text-to-video: enhance → first frame → image-to-video, SEGMENTS times."""
    from flows.params import Prompt, Segments

    checked(Prompt, prompt, "prompt")
    checked(Segments, segments, "--segments")
    out_path = checked_out_path(out_file)
    profile_name, store_url, prof = check_common(profile, store, seed, weights=weights)
    check_prompt_fits(prof, prompt)

    policy = review_policy(review)
    from flows.text_to_video import text_to_video

    result = run_flow(lambda: text_to_video(prompt=prompt, segments=segments,
                                            profile=profile_name, store=store_url, seed=seed,
                                            weights=weights, review=policy,
                                            refresh=refresh),
                      f"text-to-video on profile '{profile_name}' ({segments} segment(s))", policy)
    _report(result, out_path)


def _report(result, out_path: Optional[Path]) -> None:
    video = result.video
    report_video(result.store, video.mp4_key, out_path, f"{video.num_frames} frames, "
                 f"{video.width}x{video.height} @ {video.fps:g} fps")


def _run_sop(flow: str, out_file: Optional[Path], profile: Optional[str], store: Optional[str],
             seed: int, review: str, weights: Optional[str], refresh: bool,
             texts: tuple[str, ...] = (),
             files: Optional[dict[str, str]] = None, **params: Optional[str]) -> None:
    """The body of every SOP command but t2v: ``flow`` is "module:function"; ``texts`` name the
    ``params`` that are free text, ``files`` map the ``params`` that are input files to
    "image" or "video". Each is checked (and each file decoded) before the store is touched."""
    from flows.params import Prompt

    for name in texts:
        if params[name] is not None:
            checked(Prompt, params[name], name.replace("_", " "))
    out_path = checked_out_path(out_file)
    profile_name, store_url, _ = check_common(profile, store, seed, weights=weights)
    policy = review_policy(review)
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
    result = run_flow(lambda: run(profile=profile_name, store=store_url, seed=seed,
                                  weights=weights, review=policy, refresh=refresh, **params),
                      f"{run.name} on profile '{profile_name}'", policy)
    _report(result, out_path)


def i2v(
    image: str = typer.Argument(..., help=f"the first frame: {SOURCE_HELP}"),
    prompt: Optional[str] = typer.Argument(None, help="what happens (enhanced; used where the "
                                           "video model takes text)"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
    refresh: bool = RefreshOpt,
) -> None:
    """Image-to-video: animate IMAGE."""
    _run_sop("flows.image_to_video:image_to_video", out_file, profile, store, seed, review,
             weights, refresh, texts=("prompt",), files={"image": "image"}, image=image, prompt=prompt)


def extend(
    video: str = typer.Argument(..., help=f"the video to continue: {SOURCE_HELP}"),
    prompt: Optional[str] = typer.Argument(None, help="what happens next"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
    refresh: bool = RefreshOpt,
) -> None:
    """Extend VIDEO: new frames from its last frame, appended to it."""
    _run_sop("flows.extend_video:extend_video", out_file, profile, store, seed, review,
             weights, refresh, texts=("prompt",), files={"video": "video"}, video=video, prompt=prompt)


def edit(
    video: str = typer.Argument(..., help=f"the video to edit: {SOURCE_HELP}"),
    instruction: str = typer.Argument(..., help="what to change in it"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
    refresh: bool = RefreshOpt,
) -> None:
    """Video-to-video edit: edit VIDEO's first frame by INSTRUCTION, then animate it."""
    _run_sop("flows.edit_video:edit_video", out_file, profile, store, seed, review,
             weights, refresh, texts=("instruction",), files={"video": "video"}, video=video,
             instruction=instruction)


def connect(
    video_a: str = typer.Argument(..., help=f"the first video: {SOURCE_HELP}"),
    video_b: str = typer.Argument(..., help=f"the second video: {SOURCE_HELP}"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
    refresh: bool = RefreshOpt,
) -> None:
    """Connect VIDEO_A to VIDEO_B with a generated transition (output at VIDEO_A's size and fps)."""
    _run_sop("flows.connect_videos:connect_videos", out_file, profile, store, seed, review,
             weights, refresh, files={"video_a": "video", "video_b": "video"}, video_a=video_a, video_b=video_b)


def digital_world(
    prompt: Optional[str] = typer.Argument(None, help='a scene; "in digital world style" is '
                                           "appended"),
    video: Optional[str] = typer.Option(None, "--video", help="restyle this video's first "
                                        f"frame instead ({SOURCE_HELP})"),
    out_file: Optional[Path] = OutOpt,
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = ReviewOpt,
    weights: Optional[str] = WeightsOpt,
    refresh: bool = RefreshOpt,
) -> None:
    """Digital world: PROMPT in digital world style, or --video VIDEO restyled."""
    if (prompt is None) == (video is None):
        raise MoraError("give a PROMPT or --video VIDEO" + (", not both" if video else ""))
    _run_sop("flows.digital_world:digital_world", out_file, profile, store, seed, review,
             weights, refresh, texts=("prompt",), files={"video": "video"}, prompt=prompt, video=video)
