"""Denoising-step progress: the pipelines' step callback reaches listeners (the CLI's bars, the
run page's progress artifacts) and changes nothing in what is generated."""

from __future__ import annotations

import io

import numpy as np
import pytest

from agents.progress import listening, stage_name
from configs import load_profile

pytestmark = pytest.mark.usefixtures("tiny_zoo")


def _agent():
    from agents.registry import agents_for

    return agents_for(load_profile("tiny")).text_to_image


def test_steps_reach_the_listener_and_change_nothing():
    agent = _agent()
    assert "callback_on_step_end" not in agent.call_args(prompt="a fox")  # nobody listens
    plain = np.asarray(agent("a fox", seed=3))
    seen = []
    with listening(lambda *step: seen.append(step)):
        assert "callback_on_step_end" in agent.call_args(prompt="a fox")
        heard = np.asarray(agent("a fox", seed=3))
    assert seen == [("text-to-image", 1, 2), ("text-to-image", 2, 2)]
    assert np.array_equal(plain, heard)
    assert stage_name(agent) == "text-to-image"


def test_terminal_shows_a_bar_per_pipeline_call():
    from rich.console import Console

    from agents.progress import step_callback
    from mora.cli_progress import step_bars

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with step_bars(console, "text-to-video"):
        callback = step_callback("image-to-video", 3)
        for _ in range(2):  # two clips
            for step in range(3):
                callback(None, step, 999, {})
    text = buffer.getvalue()
    assert "text-to-video…" in text and "image-to-video #1" in text and "image-to-video #2" in text
    assert "3/3" in text


@pytest.mark.usefixtures("prefect_server")
def test_run_page_gets_a_progress_artifact_per_stage(local_store, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.text_to_video import text_to_video
    from storage import open_store
    from tasks import report

    monkeypatch.setattr(report, "STEP_PROGRESS_EVERY_S", 0.0)  # tiny steps are quick
    result = text_to_video(prompt="a heron", store=local_store, seed=41)
    run_id = open_store(local_store).read_provenance(result.video.mp4_key).flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    steps = sorted(a.description for a in artifacts if a.type == "progress"
                   and "denoising" in (a.description or ""))
    assert steps == ["image-to-video: denoising step 2 of 2",
                     "text-to-image: denoising step 2 of 2"], [a.description for a in artifacts]
