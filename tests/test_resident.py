"""Resident models for deployed runs: the SOP flows run on a process worker as before, while their
GPU tasks go to a long-lived `mora worker` (MORA_GPU_TASKS=task-workers) that loads each model
once for every run; a replacement worker takes over when one is killed, between runs or in
the middle of a task."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from storage import open_store

pytestmark = pytest.mark.integration
WORKER_READY = "Subscribing to runs of task(s)"


def _start_task_worker(server, name: str, stall_in: str | None = None, marker=None):
    """A `mora worker`; with ``stall_in``, one that stops for good at the end of the first
    denoising step of that stage, after writing ``marker`` (tests/stall.py)."""
    env = {"CUDA_VISIBLE_DEVICES": "0"}
    args = [sys.executable, "-m", "mora.cli", "worker"]
    if stall_in:
        env.update(MORA_TEST_STALL_STAGE=stall_in, MORA_TEST_STALL_MARKER=str(marker))
        args = [sys.executable, "-c", "import tests.stall, mora.cli; mora.cli.main()", "worker"]
    proc = server.start_process(name, args, extra_env=env)
    deadline = time.monotonic() + 120
    while WORKER_READY not in proc.tail(200):
        assert time.monotonic() < deadline and proc.alive(), proc.tail()
        time.sleep(0.3)
    return proc


def _made_by(store: str, flow_run_id: str | None) -> list[tuple[str, int]]:
    """(pid, models loaded in that process) of every model-made artifact of one run (of every
    run with ``None``)."""
    opened = open_store(store)
    rows = []
    for key in opened.list(""):
        if key.endswith(".prov.json"):
            continue
        prov = opened.read_provenance(key)
        if flow_run_id in (None, prov.flow_run_id) and "worker" in prov.params:
            rows.append((prov.params["worker"]["pid"], prov.params["worker"]["model_loads"]))
    return rows


@pytest.mark.timeout(600)
def test_deployed_runs_reuse_a_task_workers_models(real_server, tiny_zoo, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    server = real_server.start(timeout=120)
    server.cli("work-pool", "create", "gpu", "--type", "process")
    flow_worker = server.start_worker("gpu", extra_env={
        "MORA_GPU_TASKS": "task-workers", "MORA_GPU_TASK_TIMEOUT_S": "120"})
    server.cli("deploy", "--name", "text-to-video")
    first = _start_task_worker(server, "mora-worker-a")
    store = str(tmp_path / "store")

    def run(seed: int):
        with server.api_settings():
            flow_run = run_deployment(name="text-to-video/text-to-video", timeout=240,
                                      parameters={"prompt": "a koi pond", "store": store,
                                                  "seed": seed, "segments": 2})
            with get_client(sync_client=True) as client:
                flow_run = client.read_flow_run(flow_run.id)
        # The server's log too: under load its SQLite has answered "database is locked", and a
        # task handed to the worker never arrived (issue 24's evidence).
        logs = "\n".join(f"--- {p.name}\n{p.tail(40)}" for p in [*server.workers, server.proc])
        assert flow_run.state.is_completed(), f"{flow_run.state!r}\n{logs}"
        made = _made_by(store, str(flow_run.id))
        assert len(made) == 1 + 2 * 2, made  # the first frame; two clips (frames + mp4 each)
        return made

    runs = [run(seed) for seed in (1, 2, 3)]
    pids = {pid for made in runs for pid, _ in made}
    assert pids == {str(first.pid)}, (pids, first.pid)  # not the flow-run processes
    loaded = max(loads for _, loads in runs[0])
    assert loaded >= 2  # text-to-image and image-to-video models, loaded in the first run
    assert all(loads == loaded for made in runs[1:] for _, loads in made), runs

    # Kill the worker between runs: a new one takes the next run's tasks.
    os.killpg(first.pid, signal.SIGKILL)
    first.popen.wait(10)
    second = _start_task_worker(server, "mora-worker-b")
    made = run(4)
    assert {pid for pid, _ in made} == {str(second.pid)}
    assert flow_worker.alive(), flow_worker.tail()
    assert server.stop() == []


@pytest.mark.timeout(600)
def test_a_task_whose_worker_dies_mid_task_is_handed_to_another(real_server, tiny_zoo,
                                                                 tmp_path):
    """SIGKILL the `mora worker` while it runs a clip: after MORA_GPU_TASK_TIMEOUT_S the flow
    hands the task out again (tasks/generate.py GpuTask), a new worker makes it, the run ends.

    The first worker stops itself at the end of the clip's first denoising step and says so in
    a file (tests/stall.py): the kill lands inside the clip on any machine, idle or loaded."""
    store = str(tmp_path / "store")
    marker = tmp_path / "stalled-in-image-to-video"

    server = real_server.start(timeout=120)
    first = _start_task_worker(server, "mora-worker-a", stall_in="image-to-video",
                               marker=marker)
    run = server.start_process("mora-t2v", [
        sys.executable, "-m", "mora.cli", "t2v", "a koi pond", "--store", store, "--seed", "5"],
        extra_env={"MORA_GPU_TASKS": "task-workers", "MORA_GPU_TASK_TIMEOUT_S": "45"})
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert time.monotonic() < deadline and run.alive() and first.alive(), \
            f"{first.tail()}\n{run.tail()}"
        time.sleep(0.1)
    assert marker.read_text().startswith("image-to-video step 1 of "), marker.read_text()
    os.killpg(first.pid, signal.SIGKILL)
    first.popen.wait(10)
    second = _start_task_worker(server, "mora-worker-b")

    assert run.popen.wait(300) == 0, run.tail()
    made = _made_by(store, None)
    pids = sorted({pid for pid, _ in made})
    assert pids == sorted({str(first.pid), str(second.pid)}), (made, first.pid, second.pid)
    # The clip and its mp4 are the new worker's; the first frame, made before the kill, is not.
    assert sum(pid == str(second.pid) for pid, _ in made) == 2, made
    assert server.stop() == []
