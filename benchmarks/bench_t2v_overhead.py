"""Orchestration overhead of text-to-video on the tiny profile, and warm per-stage times.

Runs the same work twice, warm (models loaded, imports done):
  direct — the task bodies called as plain functions (`task.fn`), no Prefect;
  flow   — the `text-to-video` Prefect flow (tasks, result persistence, API round trips),
           without flow heartbeats as `mora` runs it locally, and with Prefect's default ones.
The ratio flow/direct is the orchestration overhead. Each repetition uses a new seed so the
flow's cache never short-cuts the work.

    make bench            # or:  .venv/bin/python benchmarks/bench_t2v_overhead.py --reps 3
Set PREFECT_API_URL to measure against a running `prefect server start` instead of the
temporary in-process server.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def direct_t2v(prompt: str, segments: int, store_url: str, seed: int, stage_times: dict) -> None:
    """The flow's steps with each task body called directly (no Prefect)."""
    from configs import load_profile
    from tasks.artifacts import RunContext
    from tasks.generate import enhance_prompt, image_to_video, join_clips, last_frame, text_to_image
    from tasks.report import contact_sheet

    def timed(name, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        stage_times.setdefault(name, []).append(time.perf_counter() - start)
        return value

    prof = load_profile("tiny")
    enhanced = timed("enhance-prompt", enhance_prompt.fn, prof, prompt)
    ctx = RunContext(sop="text-to-video", profile="tiny", prompt=prompt, enhanced_prompt=enhanced)
    start = timed("text-to-image", text_to_image.fn, prof, store_url, ctx, enhanced, seed)
    clips = []
    for segment in range(segments):
        clip = timed("image-to-video", image_to_video.fn, prof, store_url, ctx, start, enhanced,
                     seed + 1000 * segment, segment)
        clips.append(clip)
        if segment + 1 < segments:
            start = timed("last-frame", last_frame.fn, store_url, ctx, clip)
    video = timed("join-clips", join_clips.fn, store_url, ctx, clips)
    timed("contact-sheet", contact_sheet.fn, store_url, ctx, video)


def count_api_calls() -> "collections.Counter":
    """Count the HTTP requests the Prefect client sends, by method and path (ids folded)."""
    import collections
    import re

    import httpx

    calls: collections.Counter = collections.Counter()

    def note(request) -> None:
        calls[f"{request.method} {re.sub(r'[0-9a-f-]{36}', '{id}', request.url.path)}"] += 1

    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self, request, *args, **kwargs):
        note(request)
        return sync_send(self, request, *args, **kwargs)

    async def asend(self, request, *args, **kwargs):
        note(request)
        return await async_send(self, request, *args, **kwargs)

    httpx.Client.send, httpx.AsyncClient.send = send, asend
    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--api-calls", action="store_true",
                        help="also count the API calls of one more warm flow run")
    args = parser.parse_args()
    calls = count_api_calls() if args.api_calls else None

    from agents.tiny import build_tiny_zoo
    from flows.text_to_video import text_to_video

    build_tiny_zoo()
    store_url = tempfile.mkdtemp(prefix="mora-bench-store-")
    prompt = "a red fox running through fresh snow"
    stage_times: dict[str, list[float]] = {}

    direct_t2v(prompt, args.segments, store_url, 10_000, {})          # warm-up: loads models
    text_to_video(prompt=prompt, segments=args.segments, store=store_url, seed=20_000)

    from prefect.settings import temporary_settings

    from mora.cli_common import local_run_settings

    direct, flow, flow_heartbeat = [], [], []
    for rep in range(args.reps):
        start = time.perf_counter()
        direct_t2v(prompt, args.segments, store_url, rep, stage_times)
        direct.append(time.perf_counter() - start)
        # As `mora` runs it without a Prefect server: no flow heartbeats, no CSRF token request.
        with temporary_settings(local_run_settings()):
            start = time.perf_counter()
            text_to_video(prompt=prompt, segments=args.segments, store=store_url, seed=100 + rep)
            flow.append(time.perf_counter() - start)
        start = time.perf_counter()  # Prefect's default: a heartbeat every 180 s
        text_to_video(prompt=prompt, segments=args.segments, store=store_url, seed=500 + rep)
        flow_heartbeat.append(time.perf_counter() - start)

    if calls is not None:
        calls.clear()
        with temporary_settings(local_run_settings()):
            text_to_video(prompt=prompt, segments=args.segments, store=store_url, seed=900)
        print(f"\nAPI calls in one warm flow run: {sum(calls.values())}")
        for name, count in calls.most_common():
            print(f"  {count:3d} {name}")

    d, f, fh = statistics.median(direct), statistics.median(flow), statistics.median(flow_heartbeat)
    print(f"\n# text-to-video, tiny profile, {args.segments} segments, median of {args.reps}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"direct (agents + store, no Prefect): {d:.3f} s")
    print(f"Prefect flow (as `mora` runs it)   : {f:.3f} s")
    print(f"orchestration overhead (flow/direct): {f / d:.2f}x  (+{f - d:.3f} s per run)")
    print(f"with Prefect's default heartbeats  : {fh:.3f} s  ({fh / d:.2f}x; the heartbeat "
          "thread is joined while it sleeps in 1 s steps)")
    print("warm per-stage times (median, s):")
    for name, values in stage_times.items():
        print(f"  {name:16s} {statistics.median(values):.3f}  (x{len(values) // args.reps} per run)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"reproduce: .venv/bin/python benchmarks/bench_t2v_overhead.py --reps {args.reps} "
          f"--segments {args.segments}" + (" --api-calls" if calls is not None else ""))


if __name__ == "__main__":
    main()
