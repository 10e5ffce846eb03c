"""The task cache never lies (tasks/cache.py): a rerun makes anew what a change of code, weights
or store makes stale, a cached result whose artifacts are gone is made again, and the switches
(--refresh, MORA_CACHE=off, `mora cache ls / clear`) do what they say."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.text_to_video import text_to_video
from storage import open_store
from tests.mora_cli import run_cli

pytestmark = pytest.mark.usefixtures("prefect_server", "tiny_zoo")
REPO = Path(__file__).resolve().parent.parent
PROMPT = "a windmill in a field"


def _frame_bytes(result) -> bytes:
    return open_store(result.store).get_bytes(result.first_frame_key)


# ---- what a key covers ---------------------------------------------------------------------


@pytest.mark.integration
def test_a_changed_module_the_task_calls_makes_the_video_anew(tmp_path, session_server_env):
    """The issue's case 1, as a user meets it: the same command before and after an edit of
    agents/text_to_image.py (here: a copy of the project, run from its own folder)."""
    copy = tmp_path / "project"
    for package in ("agents", "configs", "flows", "metrics", "mora", "storage", "tasks"):
        shutil.copytree(REPO / package, copy / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    store = tmp_path / "store"
    env = {**session_server_env, "PYTHONPATH": str(copy)}

    def t2v() -> tuple[str, str]:
        proc = subprocess.run(
            [sys.executable, "-c", "import mora.cli; mora.cli.main()", "t2v", PROMPT,
             "--seed", "21", "--store", str(store)],
            cwd=copy, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        key = next(line.split()[2] for line in proc.stdout.splitlines()
                   if line.startswith("store key:"))
        return key, proc.stdout

    # (A rerun with nothing changed is served from the cache in a new process: the crash-resume
    # tests in tests/test_crash_safety.py rest on it.)
    first, _ = t2v()
    agent = copy / "agents" / "text_to_image.py"
    code = agent.read_text()
    old = "        return self.run(seed, prompt=prompt).images[0]\n"
    assert old in code
    agent.write_text(code.replace(old, "        from PIL import ImageOps\n\n"
                                  "        return ImageOps.invert(self.run(seed, prompt=prompt)"
                                  ".images[0].convert(\"RGB\"))\n"))
    changed, said = t2v()
    assert changed != first and "reused from the cache" not in said
    opened = open_store(str(store))
    before, after = (opened.read_provenance(k) for k in (first, changed))
    assert before.parents != after.parents  # made from another first frame


def _profile_with_own_sd3(tmp_path: Path) -> tuple[str, Path]:
    """The tiny profile with its text-to-image model in a folder of its own (a copy of tiny:sd3)."""
    from agents.tiny import tiny_model_dir

    folder = tmp_path / "my-sd3"
    shutil.copytree(tiny_model_dir("sd3"), folder)
    text = (REPO / "configs" / "profiles" / "tiny.yaml").read_text()
    text = text.replace('  model: "tiny:sd3"\n  height: 64\n  width: 64\n  steps: 2',
                        f'  model: "{folder}"\n  height: 64\n  width: 64\n  steps: 2', 1)
    assert str(folder) in text
    profile = tmp_path / "own-sd3.yaml"
    profile.write_text(text)
    return str(profile), folder


def test_weights_rewritten_at_the_same_path_make_the_video_anew(tmp_path, local_store,
                                                                generation_calls):
    """The issue's case 2: same command, same model folder, other weights in it."""
    from safetensors.torch import load_file, save_file

    profile, folder = _profile_with_own_sd3(tmp_path)
    first = text_to_video(prompt=PROMPT, profile=profile, store=local_store, seed=21)
    generation_calls.clear()
    again = text_to_video(prompt=PROMPT, profile=profile, store=local_store, seed=21)
    assert generation_calls == [] and again.video == first.video

    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    save_file({name: t * 1.5 for name, t in tensors.items()}, weights)
    retrained = text_to_video(prompt=PROMPT, profile=profile, store=local_store, seed=21)
    assert generation_calls.count("TextToImageAgent") == 1  # made anew, by the new weights
    assert retrained.video != first.video
    assert _frame_bytes(retrained) != _frame_bytes(first)


def test_a_deleted_local_store_makes_the_video_anew(local_store, generation_calls):
    """The issue's case 3: the store is wiped between two runs of the same command."""
    first = text_to_video(prompt=PROMPT, store=local_store, seed=22)
    shutil.rmtree(local_store)
    generation_calls.clear()
    again = text_to_video(prompt=PROMPT, store=local_store, seed=22)
    assert generation_calls.count("TextToImageAgent") == 1
    assert generation_calls.count("ImageToVideoAgent") == 1
    store = open_store(local_store)
    assert store.exists(again.video.mp4_key) and store.exists(again.first_frame_key)
    assert again.video != first.video


def test_a_video_deleted_from_the_store_alone_is_made_again(local_store, generation_calls):
    """A hit is checked artifact by artifact: only the stage whose output is gone runs again
    (and the stages after it, whose inputs are then new)."""
    first = text_to_video(prompt=PROMPT, store=local_store, seed=23)
    store = open_store(local_store)
    store.delete(first.clips[0].mp4_key)
    generation_calls.clear()
    again = text_to_video(prompt=PROMPT, store=local_store, seed=23)
    assert generation_calls == ["ImageToVideoAgent"]
    assert again.first_frame_key == first.first_frame_key
    assert store.exists(again.video.mp4_key)


@pytest.mark.integration
def test_the_same_bucket_name_on_another_endpoint_makes_the_video_anew(s3_server, monkeypatch,
                                                                       generation_calls):
    """s3://bucket/prefix on a new server (a new MinIO) is another store: the endpoint is in
    the key."""
    import boto3
    from moto.server import ThreadedMotoServer

    url = "s3://mora-test/same-name"
    first = text_to_video(prompt=PROMPT, store=url, seed=24)
    second = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    second.start()
    try:
        host, port = second.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.session.Session().client("s3", endpoint_url=endpoint).create_bucket(
            Bucket="mora-test")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        generation_calls.clear()
        again = text_to_video(prompt=PROMPT, store=url, seed=24)
        assert generation_calls.count("TextToImageAgent") == 1
        assert open_store(url).exists(again.video.mp4_key)  # on the new endpoint
        assert again.video != first.video
    finally:
        second.stop()


def test_identity_of_a_folder_is_remembered_and_follows_its_content(tmp_path, monkeypatch):
    from agents import identity

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a.safetensors").write_bytes(b"one")
    first = identity.folder_fingerprint(folder)
    reads = []
    monkeypatch.setattr(identity, "_file_sha256",
                        lambda path, _real=identity._file_sha256: reads.append(path) or _real(path))
    identity._REMEMBERED.clear()  # a new process: read back from MORA_HOME/fingerprints.json
    assert identity.folder_fingerprint(folder) == first and reads == []
    os.utime(folder / "a.safetensors", ns=(1, 1))  # touched, same content: reread, same hash
    assert identity.folder_fingerprint(folder) == first and len(reads) == 1
    (folder / "a.safetensors").write_bytes(b"two")
    assert identity.folder_fingerprint(folder) != first
    assert identity.model_identity("org/not-cached-model").startswith("hub:org/not-cached-model@")


# ---- switches --------------------------------------------------------------------------------


def test_refresh_makes_every_stage_anew_and_the_next_run_reuses_that(local_store,
                                                                     generation_calls):
    first = text_to_video(prompt=PROMPT, store=local_store, seed=25)
    generation_calls.clear()
    fresh = text_to_video(prompt=PROMPT, store=local_store, seed=25, refresh=True)
    assert generation_calls == ["TextToImageAgent", "ImageToVideoAgent"]
    assert fresh.video != first.video
    generation_calls.clear()
    after = text_to_video(prompt=PROMPT, store=local_store, seed=25)
    assert generation_calls == [] and after.video == fresh.video


def test_the_run_page_says_which_run_made_a_reused_video(local_store):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    def result_page() -> str:
        with get_client(sync_client=True) as client:
            [latest] = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["text-to-video-result"])),
                sort=ArtifactSort.CREATED_DESC, limit=1)
        return latest.data

    first = text_to_video(prompt=PROMPT, store=local_store, seed=30)
    assert "| made | in this run |" in result_page()
    made_by = open_store(local_store).read_provenance(first.video.mp4_key).flow_run_id
    text_to_video(prompt=PROMPT, store=local_store, seed=30)
    assert f"| made | reused from the cache: made by flow run {made_by} at " in result_page()


def test_cache_off_neither_reads_nor_writes_records(local_store, generation_calls, monkeypatch):
    from tasks.cache import cache_records

    monkeypatch.setenv("MORA_CACHE", "off")
    before = {r.name for r in cache_records()}
    text_to_video(prompt=PROMPT, store=local_store, seed=26)
    text_to_video(prompt=PROMPT, store=local_store, seed=26)
    assert generation_calls.count("TextToImageAgent") == 2
    assert {r.name for r in cache_records()} == before


def test_cli_refresh_cache_ls_and_clear(local_store):
    from tasks.cache import cache_records

    code, out, err = run_cli(["t2v", PROMPT, "--seed", "27", "--store", local_store],
                             session_server=True)
    assert code == 0, err
    key = next(line.split()[2] for line in out.splitlines() if line.startswith("store key:"))
    code, out, err = run_cli(["t2v", PROMPT, "--seed", "27", "--store", local_store],
                             session_server=True)
    assert code == 0 and f"store key: {key}" in out and "reused from the cache: made by" in out
    code, out, err = run_cli(["t2v", PROMPT, "--seed", "27", "--store", local_store,
                              "--refresh"], session_server=True)
    assert code == 0 and f"store key: {key}" not in out and "reused from the cache" not in out

    code, out, _ = run_cli(["cache", "ls"])
    assert code == 0 and key.removesuffix(".mp4") in out  # a record points at the video
    records = cache_records()
    assert out.strip().splitlines()[-1].startswith(f"{len(records)} record(s)")

    code, out, _ = run_cli(["cache", "clear", "--older-than", "1d"])
    assert code == 0 and out.startswith("removed 0 cache record(s)")
    code, out, _ = run_cli(["cache", "clear"])
    assert code == 0 and out.startswith(f"removed {len(records)} cache record(s)")
    assert cache_records() == []
    assert open_store(local_store).exists(key)  # clearing never touches the store


@pytest.mark.parametrize("argv, message", [
    (["cache", "clear", "--older-than", "soon"], "error: --older-than must be a number and a "
                                                 "unit"),
    (["t2v", PROMPT], "error: MORA_CACHE must be on or off, got 'sometimes'"),
])
def test_cache_bad_input_is_one_line(argv, message, monkeypatch, tmp_path):
    monkeypatch.setenv("MORA_CACHE", "sometimes")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(argv)
    assert code == 2 and err.strip() == message + err.strip()[len(message):]
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mora-store").exists()


def test_a_worker_with_a_bad_cache_setting_says_so_before_serving(monkeypatch):
    monkeypatch.setenv("MORA_CACHE", "sometimes")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached
    code, _, err = run_cli(["worker"], session_server=True)
    assert code == 2 and err.strip() == "error: MORA_CACHE must be on or off, got 'sometimes'"


# ---- failures read as one line ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_store_failing_mid_run_prints_one_line_and_the_run_log_keeps_the_traceback(
        where, tmp_path, session_server_env, s3_server):
    """A MoraError inside a task reaches the console as its one line, with no traceback; the
    traceback stays in the run's logs. local: the store cannot take the video (as on a full
    disk); s3: the endpoint stops answering the video's uploads mid-run."""
    from tests.s3faults import FaultProxy

    env = dict(session_server_env)
    with FaultProxy(s3_server, rate=1.0, modes=("drop-before",),
                    match=lambda method, path: method == "PUT" and "/video/" in path) as proxy:
        if where == "local":
            store = tmp_path / "store"
            store.mkdir()
            (store / "video").write_text("not a folder")  # every video write fails, mid-run
            url = str(store)
        else:
            url = f"s3://mora-test/gone-{tmp_path.name}"
            env.update(AWS_ENDPOINT_URL_S3=proxy.url, AWS_MAX_ATTEMPTS="2")
        argv = [sys.executable, "-c", "import mora.cli; mora.cli.main()", "t2v", PROMPT,
                "--seed", "28", "--store", url]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr + proc.stdout
        last = proc.stderr.strip().splitlines()[-1]
        said = "cannot write 'video/" if where == "local" else "S3 endpoint "
        assert last.startswith("error: " + said), last
        assert "Traceback" in "\n".join(_logs_of_last_failed_run())
    if where == "local":  # `mora --verbose` shows it (in this process: no second start-up)
        code, _, err = run_cli(["--verbose", *argv[3:]], session_server=True)
        assert code == 2 and "Traceback" in err and "MoraError" in err


def _logs_of_last_failed_run() -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType, LogFilter,
                                                LogFilterFlowRunId)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.FAILED]))),
            sort=FlowRunSort.START_TIME_DESC, limit=1)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[run.id])))
    return [log.message for log in logs]


# ---- two runs at once ------------------------------------------------------------------------


@pytest.mark.integration
def test_two_runs_with_the_same_inputs_at_once_make_each_stage_once(tmp_path, session_server_env):
    """Prefect's SERIALIZABLE isolation with tasks/cache.py's process locks: one run makes each
    stage, the other waits for it and reuses it; the store holds one set of videos."""
    store = tmp_path / "store"
    argv = [sys.executable, "-c", "import mora.cli; mora.cli.main()", "t2v", PROMPT, "--seed",
            "29", "--store", str(store)]
    runs = [subprocess.Popen(argv, env=session_server_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    keys = {next(line.split()[2] for line in out.splitlines() if line.startswith("store key:"))
            for out, _ in outputs}
    assert len(keys) == 1  # both name the same video
    videos = open_store(str(store)).list("video/")
    assert len([k for k in videos if k.endswith(".mp4")]) == 2  # one clip and its final video
    assert len([k for k in open_store(str(store)).list("image/")
                if open_store(str(store)).read_provenance(k).params.get("stage")
                == "first_frame"]) == 1
