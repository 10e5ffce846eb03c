"""Stop a `mora` process in the middle of a denoising loop, for tests that kill it there.

Imported first by a test's subprocess (``python -c "import tests.stall; …"``): the pipeline
calls of the stage named by ``MORA_TEST_STALL_STAGE`` (e.g. ``image-to-video``) get a step
callback that, at the end of their first step, writes the file ``MORA_TEST_STALL_MARKER`` and
then blocks for good. The test waits for that file — proof that the stage is in progress and
cannot finish — and kills the process: the same on an idle machine and a loaded one, with no
guess at how long the steps take. The callback goes through ``agents.progress.step_callback``,
which `agents/base.py` looks up at every pipeline call; the product's listeners still run."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import agents.progress as progress

_STAGE = os.environ["MORA_TEST_STALL_STAGE"]
_MARKER = Path(os.environ["MORA_TEST_STALL_MARKER"])
_product_callback = progress.step_callback


def _stalling_callback(stage: str, total: int):
    inner = _product_callback(stage, total)
    if stage != _STAGE:
        return inner

    def on_step_end(pipe, step, timestep, callback_kwargs):
        if inner is not None:
            callback_kwargs = inner(pipe, step, timestep, callback_kwargs)
        _MARKER.write_text(f"{stage} step {step + 1} of {total}\n")
        threading.Event().wait()  # until the test kills this process
        return callback_kwargs

    return on_step_end


progress.step_callback = _stalling_callback
