"""The terminal's view of a running flow: a spinner for the run and a bar per pipeline call,
fed by the pipelines' denoising-step callbacks (agents/progress.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console


@contextlib.contextmanager
def step_bars(console: Console, what: str) -> Iterator[None]:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn)

    from agents.progress import listening

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                        refresh_per_second=4)  # the redraw thread competes with the steps
    bars: dict[str, int] = {}  # stage → calls so far
    current: list = [None, None, 0]  # the call under way: its bar, stage, last step

    def on_step(stage: str, step: int, total: int) -> None:
        bar, last_stage, last_step = current
        if bar is None or stage != last_stage or step <= last_step:  # a new call
            bars[stage] = bars.get(stage, 0) + 1
            bar = progress.add_task(f"{stage} #{bars[stage]}", total=total)
        progress.update(bar, completed=step, total=total)
        current[:] = [bar, stage, step]

    with progress, listening(on_step):
        progress.add_task(f"{what}…", total=None)
        yield
