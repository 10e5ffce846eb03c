"""Why a tagged task run can stall ~2 s on the local (SQLite) Prefect server.

For every task run with tags, Prefect's task engine takes tag concurrency slots
(`POST /api/v2/concurrency_limits/increment-with-lease`). With no limit on the tags the client
remembers "no limit" for 5 s only (prefect/concurrency/services.py `_no_limits_cache`), so it asks
again every 5 s. That request is a write transaction; when the server's SQLite database is busy
with another writer (its task-run recorder, the logs) the server answers 503, and Prefect's client
waits 2 s (its exponential back-off, `2 ** try`) before it asks again.

This runs the same small flow (one untagged task, then three 0.2 s CPU tasks) with the three
tagged and untagged, alternating, and prints per arm: flow wall times, how many task runs waited
over 0.5 s for their start, and the 503 answers counted by wrapping httpx's `AsyncClient.send`.
No models are involved: it is Prefect and its temporary server alone.

    .venv/bin/python benchmarks/bench_tag_stall.py --reps 12
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-tag-stall-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a new database

WORK_S = 0.2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=12)
    args = parser.parse_args()

    import httpx
    from prefect import flow, task

    answers: list[int] = []
    send = httpx.AsyncClient.send

    async def counted(self, request, *a, **k):
        response = await send(self, request, *a, **k)
        if "increment-with-lease" in request.url.path:
            answers.append(response.status_code)
        return response

    httpx.AsyncClient.send = counted

    def busy(x: int) -> int:
        start = time.perf_counter()
        while time.perf_counter() - start < WORK_S:
            pass
        return x

    tagged, untagged = task(busy, name="tagged", tags=["gpu"]), task(busy, name="untagged")
    first = task(lambda x: x, name="first")

    @flow
    def small(n: int, with_tags: bool) -> list[float]:
        first(n)
        waits = []
        for i in range(3):
            start = time.perf_counter()
            (tagged if with_tags else untagged)(i)
            waits.append(time.perf_counter() - start - WORK_S)
        return waits

    small(0, True)  # starts the temporary server
    arms = {True: ([], [], []), False: ([], [], [])}  # walls, task waits, 503 answers
    for rep in range(args.reps):
        for with_tags in (True, False):
            answers.clear()
            start = time.perf_counter()
            waits = small(rep, with_tags)
            walls, all_waits, errors = arms[with_tags]
            walls.append(time.perf_counter() - start)
            all_waits.extend(waits)
            errors.append(answers.count(503))

    print(f"\n# a flow of 1 + 3 small tasks, {args.reps} runs per arm, alternating")
    for with_tags, (walls, waits, errors) in arms.items():
        slow = [w for w in waits if w > 0.5]
        print(f"{'tagged' if with_tags else 'untagged':9s} flow median {statistics.median(walls):.2f} s, "
              f"max {max(walls):.2f} s; task runs that waited > 0.5 s to start: {len(slow)} of "
              f"{len(waits)} ({', '.join(f'{w:.2f}' for w in slow) or '-'} s); 503 answers to "
              f"increment-with-lease: {sum(errors)}")
    print(f"reproduce: .venv/bin/python benchmarks/bench_tag_stall.py --reps {args.reps}")


if __name__ == "__main__":
    main()
