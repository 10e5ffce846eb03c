"""GPU workers (issue 6): GPU tasks hold a slot of a strict global concurrency limit, and a
training round's sampling fans out over the workers of a work pool, one per (simulated) GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from flows.text_to_video import text_to_video
from storage import open_store
from tests.prefect_server import REPO_ROOT
from tests.mora_cli import mora
from tests.test_training import SMALL


@pytest.mark.usefixtures("prefect_server", "tiny_zoo")
def test_gpu_tasks_need_their_concurrency_limit(tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from configs.errors import MoraError

    name = f"gpu-test-{os.getpid()}"
    monkeypatch.setenv("MORA_GPU_LIMIT", name)
    # A missing limit is an error, not "unlimited".
    with pytest.raises(MoraError, match=f"GPU concurrency limit '{name}' .* does not exist"):
        text_to_video(prompt="a koi pond", store=str(tmp_path / "a"), seed=1)

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        try:
            result = text_to_video(prompt="a koi pond", store=str(tmp_path / "b"), seed=1)
            assert open_store(result.store).exists(result.video.mp4_key)
            limit = client.read_global_concurrency_limit_by_name(name)
            assert limit.active_slots == 0  # every slot taken was given back
        finally:
            client.delete_global_concurrency_limit_by_name(name)


def test_no_task_takes_tag_concurrency_slots():
    """A tagged task run makes Prefect take tag concurrency slots, and the local SQLite server
    answers that write with 503 when busy, which the client retries after 2 s
    (benchmarks/bench_tag_stall.py): the GPU guard is MORA_GPU_LIMIT, never a tag."""
    import importlib
    import pkgutil

    from prefect import Task

    import tasks

    found = []
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        for value in vars(module).values():
            task = getattr(value, "task", value)  # tasks.generate.GpuTask wraps a task
            if isinstance(task, Task):
                found.append(task)
                assert not task.tags, (task.name, task.tags)
    assert {"text-to-image", "image-to-video", "sample-candidates", "finetune-chunk"} <= {
        t.name for t in found}


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_round_sampling_fans_out_over_two_gpu_workers(real_server, tiny_zoo, tmp_path):
    from prefect.client.orchestration import get_client

    from tasks.training import read_dataset

    server = real_server
    server.start(timeout=120)
    server.cli("work-pool", "create", "gpu", "--type", "process")
    workers = []
    for device in ("0", "1"):  # one worker per GPU, each pinned and limited to one run
        server.cli("global-concurrency-limit", "create", f"gpu-{device}", "--limit", "1")
        workers.append(server.start_worker("gpu", limit=1, name=f"gpu-{device}", extra_env={
            "CUDA_VISIBLE_DEVICES": device, "MORA_GPU_LIMIT": f"gpu-{device}"}))
    server.cli("deploy", "--name", "sample-candidates")

    config = tmp_path / "fan-out.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "prompts": 2, "candidates": 2,
                                      "sampling": {"engine": "deployment",
                                                   "prompts_per_run": 1}}))
    store = tmp_path / "store"
    with server.api_settings():  # the round in this process (tests/mora_cli.py)
        round_run = mora("train", "--config", str(config), "--name", "fan", "--store",
                         str(store), session_server=True)
    logs = "\n".join(f"--- {w.name}\n{w.tail(30)}" for w in workers)
    assert round_run.returncode == 0, f"{round_run.stderr[-3000:]}\n{logs}"

    # Two sampling runs, both completed, one on each worker (each records its device).
    with server.api_settings(), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("sample-candidates/sample-candidates")
        runs = [r for r in client.read_flow_runs() if r.deployment_id == deployment.id]
    assert len(runs) == 2 and all(r.state.is_completed() for r in runs), runs
    opened = open_store(str(store))
    videos = [k for k in opened.list("video/") if k.endswith(".npz")]
    made_on = {opened.read_provenance(k).params["worker"]["cuda_visible_devices"]
               for k in videos if opened.read_provenance(k).params.get("stage") == "candidate"}
    assert made_on == {"0", "1"}, logs

    # The round's manifest is whole: one row per accepted prompt, candidates from the runs.
    (report_key,) = [k for k in opened.list("rounds/fan-r1/") if k.endswith(".json")]
    report = json.loads(opened.get_bytes(report_key))
    frame = read_dataset(str(store), report["dataset_key"])
    assert len(frame) == report["accepted"] >= 1
    assert sorted(frame["prompt"]) == sorted(p for p in report["prompts"]
                                             if p in set(frame["prompt"]))
    run_ids = {str(r.id) for r in runs}
    for keys in frame["candidate_keys"]:
        assert len(keys) == 2
        assert {opened.read_provenance(k).flow_run_id for k in keys} <= run_ids
    for worker in workers:
        assert worker.alive(), worker.tail()


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server", "tiny_zoo")
def test_dask_engine_samples_what_inline_samples(tmp_path):
    import numpy as np

    from flows.training import training_round
    from tasks.artifacts import load_frames

    frames = {}
    for engine in ("inline", "dask"):
        config = tmp_path / f"{engine}.yaml"
        config.write_text(yaml.safe_dump({**SMALL, "prompts": 2, "candidates": 2, "sampling": {
            "engine": engine, "dask_workers": 2}}))
        store = str(tmp_path / engine)
        result = training_round(round_id="engines", config=str(config), store=store)
        opened = open_store(store)
        keys = sorted((p.params["prompt_index"], p.params["candidate"], k)
                      for k in opened.list("video/") if k.endswith(".npz")
                      and (p := opened.read_provenance(k)).params.get("stage") == "candidate")
        frames[engine] = [load_frames(opened, k)[0] for *_, k in keys]
        assert result.report.candidates == 2 and len(keys) == 4
        pids = {opened.read_provenance(k).params["worker"]["pid"] for *_, k in keys}
        # inline: this process; dask: the cluster's worker processes
        assert (pids == {str(os.getpid())}) == (engine == "inline"), pids
    assert all(np.array_equal(a, b) for a, b in zip(frames["inline"], frames["dask"]))


@pytest.mark.integration
@pytest.mark.timeout(480)
def test_task_workers_keep_models_loaded_across_rounds(real_server, tiny_zoo, tmp_path):
    """`mora worker` processes (one per simulated GPU) take a round's sampling tasks and keep
    their models from one round (one flow run) to the next."""
    server = real_server
    server.start(timeout=120)
    workers = [server.start_process(f"mora-worker-{device}", [
        sys.executable, "-m", "mora.cli", "worker", "--limit", "1"],
        extra_env={"CUDA_VISIBLE_DEVICES": device}) for device in ("0", "1")]
    deadline = time.monotonic() + 120
    while not all("Subscribing to runs of task(s)" in w.tail(200) for w in workers):
        assert time.monotonic() < deadline and all(w.alive() for w in workers), \
            "\n".join(w.tail() for w in workers)
        time.sleep(0.5)
    config = tmp_path / "task-workers.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "prompts": 4, "candidates": 2,
                                      "sampling": {"engine": "task-workers"}}))
    store = tmp_path / "store"
    run = subprocess.run(
        [sys.executable, "-m", "mora.cli", "train", "--rounds", "2", "--config", str(config),
         "--name", "tw", "--store", str(store)], cwd=REPO_ROOT, env=server.env(),
        capture_output=True, text=True, timeout=420)
    logs = "\n".join(f"--- {w.name}\n{w.tail(30)}" for w in workers)
    assert run.returncode == 0, f"{run.stderr[-3000:]}\n{logs}"

    opened = open_store(str(store))
    made = {}  # round → [(pid, device, model loads so far)]
    for key in opened.list("video/"):
        prov = opened.read_provenance(key)
        if key.endswith(".npz") and prov.params.get("stage") == "candidate":
            worker = prov.params["worker"]
            made.setdefault(prov.flow_run_id, []).append(
                (worker["pid"], worker["cuda_visible_devices"], worker["model_loads"]))
    assert len(made) == 2, made  # candidates of two rounds (two flow runs)
    first, second = sorted(made.values(), key=lambda rows: min(r[2] for r in rows))
    assert {device for _, device, _ in first + second} == {"0", "1"}, logs
    assert {pid for pid, *_ in first + second} <= {str(w.pid) for w in workers}
    both = {pid for pid, *_ in second} & {pid for pid, *_ in first}
    assert both, (first, second)  # a worker that sampled in both rounds (flow runs)
    for pid in both:
        loads_first = max(loads for p, _, loads in first if p == pid)
        loads_second = max(loads for p, _, loads in second if p == pid)
        # round 2 samples with round 1's weights: one fine-tuned copy, no base model again
        assert loads_first >= 2 and loads_second <= loads_first + 1, (first, second)
