"""Crash safety (issue 7): a flow or a training round killed with SIGKILL at randomised points,
then run again, ends as an uninterrupted run does: no partial object visible, every stored
object whole (its bytes match its provenance sidecar), checkpoints whole, the manifest's rows
neither lost nor duplicated.

A kill point is "after the store holds k objects", k drawn (seeded) from the objects an
uninterrupted run writes, plus a random delay of up to 0.3 s: kills land before, inside and
after writes, task result records and state changes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from storage import open_store
from tests.test_training import write_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server", "tiny_zoo")]

ROUND_KILLS = 3
FLOW_KILLS = 3


def objects(store_url: str) -> list[str]:
    return [k for k in open_store(store_url).list("") if not k.endswith(".prov.json")]


def assert_all_whole(store_url: str) -> None:
    """Every visible object has a sidecar whose sha256 and size match its bytes; no temp file
    of an interrupted write is visible as an object."""
    store = open_store(store_url)
    for key in objects(store_url):
        data = store.get_bytes(key)
        prov = store.read_provenance(key)
        assert (prov.sha256, prov.size) == (hashlib.sha256(data).hexdigest(), len(data)), key
    leftovers = [p for p in _files(store_url) if p.name.startswith(".")]
    assert all(p.name not in {k.rsplit("/", 1)[-1] for k in objects(store_url)} for p in leftovers)


def _files(store_url: str):
    from pathlib import Path

    return [p for p in Path(store_url).rglob("*") if p.is_file()]


def kill_repeatedly(script: str, store_url: str, reference_objects: int, kills: int,
                    seed: int, env: dict) -> tuple[list[int], list[bool]]:
    """Run ``script`` ``kills`` times, each killed after a (seeded) random number of the
    objects an uninterrupted run writes; then nothing torn may be visible."""
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, reference_objects), kills))
    landed = [kill_at(script, store_url, k, rng.uniform(0, 0.3), env) for k in points]
    assert any(landed), "every run finished before its kill point"
    assert_all_whole(store_url)
    return points, landed


def kill_at(script: str, store_url: str, after_objects: int, delay: float, env: dict) -> bool:
    """Start ``script`` (its flows on the session's server: ``env``); SIGKILL it once the store
    holds ``after_objects`` objects (+ delay). False if it finished first."""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if os.path.isdir(store_url) and len(objects(store_url)) >= after_objects:
            time.sleep(delay)
            break
        time.sleep(0.05)
    finished = proc.poll() is not None
    if not finished:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return not finished


def test_round_killed_at_random_points_ends_like_an_uninterrupted_round(tmp_path,
                                                                        session_server_env):
    from agents.finetune import state_from_bytes, weights_from_bytes
    from flows.training import training_round
    from tasks.training import read_dataset

    config = write_config(tmp_path)
    whole = str(tmp_path / "whole")
    reference = training_round(round_id="crash-r1", config=config, store=whole, seed=9)
    total = len(objects(whole))
    store_url = str(tmp_path / "killed")
    script = ("from flows.training import training_round; "
              f"training_round(round_id='crash-r1', config={config!r}, store={store_url!r}, "
              "seed=9)")
    points, killed = kill_repeatedly(script, store_url, total, ROUND_KILLS, seed=7,
                                     env=session_server_env)

    resumed = training_round(round_id="crash-r1", config=config, store=store_url, seed=9)
    assert_all_whole(store_url)
    store = open_store(store_url)
    for key in store.list("checkpoints/"):
        if key.endswith(".safetensors"):
            data = store.get_bytes(key)
            stage = store.read_provenance(key).params["stage"]
            (state_from_bytes if stage == "train-state" else weights_from_bytes)(data)

    # The manifest the report points at has exactly the uninterrupted run's rows.
    content = ["prompt_index", "prompt", "criterion_id", "judge_a_raw", "judge_b_raw",
               "decision", "chosen", "seed"]
    a = read_dataset(whole, reference.dataset_key)[content]
    b = read_dataset(store_url, resumed.dataset_key)[content]
    assert a.equals(b) and not b.duplicated(["prompt_index"]).any()
    report = json.loads(store.get_bytes(resumed.report_key))
    assert report["dataset_key"] == resumed.dataset_key
    assert resumed.step == reference.step
    assert resumed.report.losses == pytest.approx(reference.report.losses)
    print(f"[crash] round: {total} objects uninterrupted; killed after {points} objects "
          f"({sum(killed)} of {len(points)} kills landed); rerun wrote "
          f"{len(objects(store_url))} objects in all")


def test_text_to_video_killed_at_random_points_ends_like_an_uninterrupted_run(
        tmp_path, session_server_env):
    from flows.text_to_video import text_to_video
    from tasks.artifacts import load_frames

    whole = str(tmp_path / "whole")
    reference = text_to_video(prompt="a paper boat on a puddle", segments=2, store=whole, seed=4)
    total = len(objects(whole))
    store_url = str(tmp_path / "killed")
    script = ("from flows.text_to_video import text_to_video; "
              f"text_to_video(prompt='a paper boat on a puddle', segments=2, store={store_url!r}, "
              "seed=4)")
    points, killed = kill_repeatedly(script, store_url, total, FLOW_KILLS, seed=11,
                                     env=session_server_env)

    resumed = text_to_video(prompt="a paper boat on a puddle", segments=2, store=store_url,
                            seed=4)
    assert_all_whole(store_url)
    a, _ = load_frames(open_store(whole), reference.video.frames_key)
    b, _ = load_frames(open_store(store_url), resumed.video.frames_key)
    assert np.array_equal(a, b)
    print(f"[crash] t2v: killed after {points} of {total} objects "
          f"({sum(killed)} of {len(points)} kills landed)")
