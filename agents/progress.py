"""Denoising-step progress: whoever wants it (a terminal bar, a run page's progress artifact)
listens for the steps of the pipeline calls made in its context; nothing is computed for
nobody. Plain Python (no Prefect): the listeners come from the layers above."""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Iterator
from typing import Any

# listener(stage, step, total): ``step`` denoising steps of ``total`` are done in ``stage``.
StepListener = Callable[[str, int, int], None]
_listeners: contextvars.ContextVar[tuple[StepListener, ...]] = contextvars.ContextVar(
    "mora_step_listeners", default=())


@contextlib.contextmanager
def listening(listener: StepListener) -> Iterator[None]:
    """Send the steps of every pipeline call made inside the block (this thread and the
    contexts copied from it) to ``listener`` too."""
    token = _listeners.set((*_listeners.get(), listener))
    try:
        yield
    finally:
        _listeners.reset(token)


def stage_name(agent: object) -> str:
    """``TextToImageAgent`` → ``text-to-image``."""
    name = type(agent).__name__.removesuffix("Agent")
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def step_callback(stage: str, total: int) -> Callable[..., dict] | None:
    """A diffusers ``callback_on_step_end`` telling the listeners, or None when nobody listens
    (then the pipeline is called exactly as without progress)."""
    listeners = _listeners.get()
    if not listeners:
        return None

    def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        # img2img strength and some schedulers run fewer steps than asked: the pipeline knows.
        steps = getattr(pipe, "num_timesteps", None) or total
        for listener in listeners:
            listener(stage, min(step + 1, steps), steps)
        return callback_kwargs

    return on_step_end
