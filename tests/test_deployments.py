"""prefect.yaml: the SOP deployments, deployed to a real `prefect server start` and run by a worker.

The integration test does what a user does (README, "Running on a Prefect server"): start a
server, create the work pools, `prefect deploy`, start a process worker, trigger the
text-to-video deployment through the API (what the dashboard's Run button posts), and read the
run's persisted result back from this process. Then the image-to-video deployment, given its
image as an s3:// object on a loopback moto S3 store (what a dashboard user, who cannot upload a
file, pastes in the run form): it completes, and a missing object fails the run with one line
naming it. It uses its own server and PREFECT_HOME, not the session's test harness, and leaves
no process and no PREFECT_API_URL behind.
"""

from __future__ import annotations

import inspect
import os
import re
import time
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import TypeAdapter

from tests.prefect_server import REPO_ROOT, PrefectServer, free_port
from tests.s3server import S3_BUCKET

PREFECT_YAML = REPO_ROOT / "prefect.yaml"

# deployment name → entrypoint (module:function): one deployment per SOP (SPEC §2).
SOPS = {
    "text-to-video": "flows.text_to_video:text_to_video",
    "image-to-video": "flows.image_to_video:image_to_video",
    "extend-video": "flows.extend_video:extend_video",
    "edit-video": "flows.edit_video:edit_video",
    "connect-videos": "flows.connect_videos:connect_videos",
    "digital-world": "flows.digital_world:digital_world",
}


TRAINING = {"train-round": "flows.training:scheduled_round",
            "sample-candidates": "flows.sampling:sample_prompts",
            "evaluate-weights": "flows.evaluate:evaluate_weights"}


def _deployments() -> dict[str, dict]:
    """The SOP deployments (tag `sop`)."""
    config = yaml.safe_load(PREFECT_YAML.read_text())
    return {d["name"]: d for d in config["deployments"] if "sop" in d["tags"]}


def test_train_round_runs_on_a_cron_schedule():
    config = yaml.safe_load(PREFECT_YAML.read_text())
    (d,) = [d for d in config["deployments"] if d["name"] == "train-round"]
    assert d["entrypoint"] == TRAINING["train-round"] and d["work_pool"]["name"] == "gpu"
    (schedule,) = d["schedules"]
    from prefect.client.schemas.schedules import CronSchedule

    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.cron == "0 2 * * *" and schedule["active"] is True
    assert d["parameters"] == {"config": "tiny", "review": {"mode": "auto"}}


def _source_file(entrypoint: str) -> Path:
    module = entrypoint.split(":")[0]
    return REPO_ROOT / (module.replace(".", "/") + ".py")


def _flow_description(entrypoint: str) -> str:
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False).description


def _written() -> list[str]:
    """Deployments whose flow module exists (other SOPs may still be being written)."""
    return [name for name, ep in SOPS.items() if _source_file(ep).exists()]


# ---------------------------------------------------------------------------------------------
# prefect.yaml itself (fast)


def test_prefect_yaml_declares_one_deployment_per_sop():
    config = yaml.safe_load(PREFECT_YAML.read_text())
    deployments = _deployments()
    assert {n: d["entrypoint"] for n, d in deployments.items()} == SOPS
    for name, d in deployments.items():
        assert d["work_pool"]["name"] == "gpu", name
        assert set(d["tags"]) == {"mora", "sop"}, name
        assert d["parameters"]["profile"] == "tiny", name
        assert d["parameters"]["review"]["mode"] == "auto", name
        env = d["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true", name
        assert "CUDA_VISIBLE_DEVICES" not in env, name  # the worker's own must win
    # Code comes from this checkout: a working-directory pull step, nothing fetched.
    steps = [next(iter(step)) for step in config["pull"]]
    assert steps == ["prefect.deployments.steps.set_working_directory"]
    assert not any(d.get("pull") for d in deployments.values())


@pytest.mark.parametrize("name", [*SOPS, *TRAINING])
def test_deployment_parameters_fit_the_flow_signature(name):
    entrypoint = {**SOPS, **TRAINING}[name]
    if not _source_file(entrypoint).exists():
        pytest.skip(f"{_source_file(entrypoint).relative_to(REPO_ROOT)} is not written yet")
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    assert flow.name == name
    signature = inspect.signature(flow.fn)
    hints = typing.get_type_hints(flow.fn, include_extras=True)
    every = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    for key, value in every[name].get("parameters", {}).items():
        assert key in signature.parameters, f"{name}: the flow has no parameter {key!r}"
        TypeAdapter(hints.get(key, typing.Any)).validate_python(value)


@pytest.mark.parametrize("name", [*SOPS, *TRAINING])
def test_descriptions_are_the_flows_docstrings(name):
    """prefect.yaml repeats no description: `prefect deploy` takes the flow's one-line docstring."""
    every = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    assert "description" not in every[name]
    description = _flow_description({**SOPS, **TRAINING}[name])
    assert description and "\n" not in description, description


# ---------------------------------------------------------------------------------------------
# A real server, `prefect deploy`, a process worker, a deployed run


@pytest.fixture
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefect-server")
    srv = PrefectServer(root=root, port=free_port())
    try:
        yield srv
    finally:
        leftovers = srv.stop()
        if leftovers:
            print("teardown had to force:", *leftovers, sep="\n  ")
        for proc_log in sorted(root.glob("*.log")):
            if os.environ.get("MORA_TEST_SHOW_LOGS"):
                print(f"--- {proc_log.name}\n{proc_log.read_text(errors='replace')[-6000:]}")


def _wait_until_final(flow_run_id, worker, limit_s: float = 180.0):
    """Poll the run until it is final; return it and when each state type was first seen."""
    from prefect.client.orchestration import get_client

    t0, seen = time.monotonic(), {}
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            seen.setdefault(flow_run.state.type.value, time.monotonic())
            if flow_run.state.is_final():
                return flow_run, seen
            if time.monotonic() - t0 > limit_s:
                pytest.fail(f"run still {flow_run.state.name} after {limit_s:.0f} s; worker "
                            f"log:\n{worker.tail()}")
            if not worker.alive():
                pytest.fail(f"worker exited:\n{worker.tail()}")
            time.sleep(0.2)


@pytest.mark.integration
@pytest.mark.timeout(540)
def test_deployed_text_to_video_runs_on_a_process_worker(server, tiny_zoo, tmp_path,
                                                         s3_store_url):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    from flows.text_to_video import TextToVideoResult
    from storage import open_store
    from storage import media

    api_url_before = os.environ.get("PREFECT_API_URL")
    timings: dict[str, float] = {}
    t_all = time.monotonic()

    def phase(name: str, t0: float) -> None:
        timings[name] = time.monotonic() - t0
        print(f"[deployments] {name}: {timings[name]:.1f} s")

    try:
        # 1. `prefect server start` on a free loopback port, its own PREFECT_HOME.
        server.start(timeout=120)
        phase("server start (to /api/health)", t_all)

        # 2. Work pools, as the README creates them.
        t0 = time.monotonic()
        for pool in ("gpu", "cpu"):
            server.cli("work-pool", "create", pool, "--type", "process")
        phase("work pools", t0)

        # 3. A process worker on the gpu pool, polling every second (it starts while we deploy).
        t_worker = time.monotonic()
        worker = server.start_worker("gpu", limit=1)

        # 4. `prefect deploy` from the checkout root, no prompts.
        t0 = time.monotonic()
        written = _written()
        if set(written) == set(SOPS):
            out = server.cli("deploy", "--all").stdout
        else:
            print(f"[deployments] not written yet, not deployed: {sorted(set(SOPS) - set(written))}")
            out = server.cli("deploy", *[a for n in written for a in ("--name", n)]).stdout
        phase(f"prefect deploy ({len(written)} deployments)", t0)
        with server.api_settings(), get_client(sync_client=True) as client:
            for name in written:
                d = client.read_deployment_by_name(f"{name}/{name}")
                assert d.work_pool_name == "gpu" and set(d.tags) == {"mora", "sop"}, out
                assert d.entrypoint == SOPS[name]
                assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
                    "directory": str(REPO_ROOT)}}]
                assert d.parameters["profile"] == "tiny"
                # the dashboard's Run form comes from the flow signature
                assert "profile" in d.parameter_openapi_schema["properties"]
                assert d.description == _flow_description(SOPS[name])  # from its docstring
            t2v = client.read_deployment_by_name("text-to-video/text-to-video")
            assert t2v.parameter_openapi_schema["required"] == ["prompt"]
            nightly = client.read_deployment_by_name("train-round/train-round")
            assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
            assert nightly.description == _flow_description(TRAINING["train-round"])

        # The README's CLI trigger parses its -p values (scheduled an hour out: the worker
        # leaves it alone; then deleted).
        t0 = time.monotonic()
        out = server.cli("deployment", "run", "text-to-video/text-to-video", "-p",
                         "prompt=a lighthouse in a storm", "-p", "segments=2",
                         "--start-in", "in 1 hour").stdout
        with server.api_settings(), get_client(sync_client=True) as client:
            # (train-round's cron schedule has runs of its own)
            (later,) = [r for r in client.read_flow_runs()
                        if r.state.is_scheduled() and r.deployment_id == t2v.id]
            assert later.parameters["prompt"] == "a lighthouse in a storm", out
            assert later.parameters["segments"] == 2 and later.parameters["profile"] == "tiny"
            client.delete_flow_run(later.id)
        phase("prefect deployment run (CLI, scheduled later)", t0)

        # 5. Trigger the deployment as the dashboard does (POST .../create_flow_run).
        store = tmp_path / "store"
        with server.api_settings():
            flow_run = run_deployment(
                name="text-to-video/text-to-video", timeout=0,
                parameters={"prompt": "a paper boat on a rain puddle", "store": str(store),
                            "seed": 3})
            t_run = time.monotonic()
            flow_run, seen = _wait_until_final(flow_run.id, worker)
            running_at = seen.get("RUNNING", seen.get("COMPLETED", t_run))
            timings["worker pickup (trigger to Running)"] = running_at - t_run
            timings["run (Running to final)"] = time.monotonic() - running_at
            print(f"[deployments] worker start to trigger: {t_run - t_worker:.1f} s; "
                  f"pickup (trigger to Running): {running_at - t_run:.1f} s; "
                  f"run (Running to {flow_run.state.name}): {time.monotonic() - running_at:.1f} s")

            assert flow_run.state.type == StateType.COMPLETED, (
                f"{flow_run.state!r}\n--- worker log\n{worker.tail(80)}")
            assert flow_run.deployment_id == t2v.id
            assert flow_run.parameters["profile"] == "tiny"  # the deployment's default
            assert flow_run.parameters["review"] == {"mode": "auto"}

            # 6. The persisted result reads back in this process.
            result = flow_run.state.result()
        assert isinstance(result, TextToVideoResult)
        assert result.prompt == "a paper boat on a rain puddle"
        assert result.store == str(store)
        mp4 = Path(result.mp4_uri)
        assert mp4.is_file() and mp4.is_relative_to(store), result.mp4_uri
        frames, fps = media.decode_video(mp4.read_bytes(), ".mp4")
        assert frames.shape[0] == result.video.num_frames and fps == result.video.fps
        assert open_store(str(store)).read_provenance(result.video.mp4_key).flow_run_id == str(
            flow_run.id)

        # 6b. A dashboard run cannot upload a file: the user puts the image in the bucket and
        # pastes its s3:// URI in the run form. The worker's flow runs read it with the AWS
        # endpoint and credentials of the worker's environment (tests/s3server.py sets them
        # before the worker starts). A missing object fails the run with one line naming it.
        import boto3

        bucket_key = "uploads/dashboard.png"
        frame = np.random.default_rng(5).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        png = media.png_bytes(media.array_to_image(frame))
        boto3.client("s3").put_object(Bucket=S3_BUCKET, Key=bucket_key, Body=png)
        i2v = "image-to-video/image-to-video"
        t0 = time.monotonic()
        with server.api_settings():
            given = run_deployment(name=i2v, timeout=0, parameters={
                "image": f"s3://{S3_BUCKET}/{bucket_key}", "store": s3_store_url, "seed": 1})
            missing = run_deployment(name=i2v, timeout=0, parameters={
                "image": f"s3://{S3_BUCKET}/uploads/none.png", "store": s3_store_url})
            given, _ = _wait_until_final(given.id, worker)
            missing, _ = _wait_until_final(missing.id, worker)
            assert given.state.type == StateType.COMPLETED, (
                f"{given.state!r}\n--- worker log\n{worker.tail(80)}")
            i2v_result = given.state.result()
        phase("image-to-video from s3:// (completed + missing object)", t0)
        s3 = open_store(s3_store_url)
        (ingested,) = i2v_result.inputs
        assert s3.get_bytes(ingested) == png
        assert s3.exists(i2v_result.video.mp4_key)
        assert s3.read_provenance(i2v_result.video.mp4_key).flow_run_id == str(given.id)
        assert missing.state.type == StateType.FAILED
        assert re.fullmatch(rf"Flow run encountered an exception: MoraError: image "
                            rf"'s3://{S3_BUCKET}/uploads/none\.png' does not exist at "
                            r"http://127\.0\.0\.1:\d+", missing.state.message), missing.state

        # 7. Stop the worker and the server: nothing is left (tests/prefect_server.py, stop).
        t0 = time.monotonic()
        problems = server.stop()
        phase("stop worker + server", t0)
        assert problems == []
        assert server.leftover_pids() == []
    finally:
        timings["total"] = time.monotonic() - t_all
        print("[deployments] timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        assert os.environ.get("PREFECT_API_URL") == api_url_before
