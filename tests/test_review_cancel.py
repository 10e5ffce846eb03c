"""A deployed run paused for review and cancelled from the dashboard (or the API) ends Cancelled:
its worker stops the waiting process, nothing resumes it, and no further stage is generated."""

from __future__ import annotations

import time

import pytest

from storage import open_store
from tests.prefect_server import processes_with_env


def _wait_for(client, run_id, done, what: str, worker, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if done(run.state):
            return run
        assert worker.alive(), worker.tail()
        time.sleep(0.5)
    pytest.fail(f"run not {what} after {timeout} s (state {run.state.name}):\n{worker.tail(60)}")


@pytest.mark.integration
@pytest.mark.timeout(360)
def test_cancelled_paused_run_ends_cancelled(real_server, tiny_zoo, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    server = real_server
    server.start(timeout=120)
    server.cli("work-pool", "create", "gpu", "--type", "process")
    worker = server.start_worker("gpu", limit=1)
    server.cli("deploy", "--name", "text-to-video")
    store = tmp_path / "store"
    with server.api_settings(), get_client(sync_client=True) as client:
        run = run_deployment("text-to-video/text-to-video", timeout=0, parameters={
            "prompt": "a lantern on a pier", "store": str(store), "seed": 2,
            "review": {"mode": "ask", "timeout_s": 600, "on_timeout": "approve"}})
        _wait_for(client, run.id, lambda s: s.is_paused(), "paused", worker)
        frames_before = open_store(str(store)).list("image/")

        client.set_flow_run_state(run.id, Cancelling(message="cancelled by a reviewer"),
                                  force=True)
        final = _wait_for(client, run.id, lambda s: s.is_final(), "final", worker)
        assert final.state.is_cancelled(), final.state
        # Wait until the run's own process is gone (the worker starts it with the run's id in
        # its environment): from then on nothing can resume it or animate the frame.
        deadline = time.monotonic() + 60
        while processes_with_env(f"PREFECT__FLOW_RUN_ID={run.id}"):
            assert time.monotonic() < deadline, "the cancelled run's process is still running"
            time.sleep(0.2)
        assert client.read_flow_run(run.id).state.is_cancelled()
    assert not open_store(str(store)).list("video/")  # no stage after the pause ran
    assert open_store(str(store)).list("image/") == frames_before
    assert worker.alive()  # the worker itself carries on
