"""Writers sharing one store (local folder and S3): no artifact is lost or overwritten, a race for
one key has exactly one winner, and two training rounds run at once both end intact."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

import pytest

from configs.errors import MoraError
from storage import Provenance, Store, open_store

from tests.s3server import s3_server, s3_store_url  # noqa: F401  (fixtures)

THREADS = 8
PROCESSES = 3


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_store_url")


def payload(writer: str, i: int) -> bytes:
    return f"{writer}:{i}:".encode() * (50 + i)


# ---- workers (module level: process pools pickle them by name) --------------------------------


def write_new_keys(store_url: str, writer: str, count: int) -> dict[str, str]:
    """``count`` artifacts under fresh keys: {key: writer:i}."""
    store = open_store(store_url)
    written = {}
    for i in range(count):
        data = payload(writer, i)
        key = store.put_bytes(store.new_key("image", ".png"), data,
                              Provenance(kind="image", params={"writer": writer, "i": i}))
        written[key] = f"{writer}:{i}"
    return written


def race_for_key(store_url: str, key: str, writer: str, start_at: float, as_file: bool) -> str:
    """Write ``key`` at ``start_at``: "won", or the error's message."""
    store = open_store(store_url)
    store.exists(key)  # make the client now, not inside the race
    data = payload(writer, 0)
    provenance = Provenance(kind="report", params={"writer": writer})
    time.sleep(max(0.0, start_at - time.time()))
    try:
        if as_file:
            fd, path = tempfile.mkstemp(prefix="mora-race-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                store.put_file(key, path, provenance)
            finally:
                os.unlink(path)
        else:
            store.put_bytes(key, data, provenance)
    except MoraError as exc:
        return str(exc)
    return "won"


def assert_intact(store: Store, written: dict[str, str]) -> None:
    """Every key holds its own writer's bytes and provenance; nothing else is there."""
    assert store.list("image/") == sorted(written)
    for key, who in written.items():
        writer, i = who.split(":")
        data = store.get_bytes(key)  # checked against the sidecar's sha256 and size
        assert data == payload(writer, int(i))
        assert store.read_provenance(key).params == {"writer": writer, "i": int(i)}


# ---- fresh keys -------------------------------------------------------------------------------


def test_threads_writing_fresh_keys_lose_nothing(store_url):
    with ThreadPoolExecutor(THREADS) as pool:
        results = pool.map(write_new_keys, [store_url] * THREADS,
                           [f"t{n}" for n in range(THREADS)], [12] * THREADS)
        written = {k: v for result in results for k, v in result.items()}
    assert len(written) == THREADS * 12
    assert_intact(open_store(store_url), written)


def test_processes_writing_fresh_keys_lose_nothing(store_url):
    with ProcessPoolExecutor(PROCESSES, mp_context=get_context("spawn")) as pool:
        results = pool.map(write_new_keys, [store_url] * PROCESSES,
                           [f"p{n}" for n in range(PROCESSES)], [10] * PROCESSES)
        written = {k: v for result in results for k, v in result.items()}
    assert len(written) == PROCESSES * 10
    assert_intact(open_store(store_url), written)


# ---- one key, many writers --------------------------------------------------------------------


def assert_one_winner(store: Store, key: str, outcomes: dict[str, str]) -> None:
    winners = [writer for writer, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    for writer, outcome in outcomes.items():
        if writer != winners[0]:
            assert "already exists" in outcome and key in outcome and "\n" not in outcome
    # The key holds the winner's bytes and the winner's provenance, matching each other.
    data = store.get_bytes(key)
    recorded = store.read_provenance(key)
    assert data == payload(winners[0], 0) and recorded.params == {"writer": winners[0]}
    assert recorded.sha256 == hashlib.sha256(data).hexdigest()
    assert store.list() == [key]


@pytest.mark.parametrize("as_file", [False, True], ids=["put_bytes", "put_file"])
def test_threads_racing_for_one_key_have_one_winner(store_url, as_file):
    store = open_store(store_url)
    for round_number in range(5):
        key = store.new_key("report", ".json")
        writers = [f"t{round_number}-{n}" for n in range(THREADS)]
        start_at = time.time() + 0.3
        with ThreadPoolExecutor(THREADS) as pool:
            outcomes = dict(zip(writers, pool.map(
                lambda w: race_for_key(store_url, key, w, start_at, as_file), writers)))
        assert_one_winner(store, key, outcomes)
        store.delete(key)


def test_processes_racing_for_one_key_have_one_winner(store_url):
    store = open_store(store_url)
    key = store.new_key("report", ".json")
    writers = [f"p{n}" for n in range(PROCESSES)]
    with ProcessPoolExecutor(PROCESSES, mp_context=get_context("spawn")) as pool:
        # Spawned workers take a while to start: each waits for a common moment.
        start_at = time.time() + 6
        futures = {w: pool.submit(race_for_key, store_url, key, w, start_at, False) for w in writers}
        outcomes = {w: f.result() for w, f in futures.items()}
    assert_one_winner(store, key, outcomes)


def test_existing_key_is_replaced_only_when_asked(store_url):
    store = open_store(store_url)
    key = store.put_bytes(store.new_key("report", ".json"), b"first",
                          Provenance(kind="report", seed=1))
    with pytest.raises(MoraError, match=r"cannot write .* it already exists") as info:
        store.put_bytes(key, b"second", Provenance(kind="report", seed=2))
    assert "\n" not in str(info.value)
    assert store.get_bytes(key) == b"first" and store.read_provenance(key).seed == 1
    store.put_bytes(key, b"second", Provenance(kind="report", seed=2), overwrite=True)
    assert store.get_bytes(key) == b"second" and store.read_provenance(key).seed == 2


# ---- two training rounds at once ---------------------------------------------------------------

ROUND_SCRIPT = """
import json, sys
from flows.training import training_round
result = training_round(round_id=sys.argv[1], config=sys.argv[2], store=sys.argv[3], seed=1)
print("RESULT " + json.dumps({"dataset_key": result.dataset_key, "report_key": result.report_key,
                              "weights_key": result.weights_key, "report": result.report.model_dump(mode="json")}))
"""


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server", "tiny_zoo")
def test_two_rounds_at_once_keep_both_datasets_and_reports(tmp_path, local_store,
                                                           session_server_env):
    from tasks.training import read_dataset
    from tests.test_training import write_config

    config = write_config(tmp_path, prompts=1)
    # Both runs report to the session's Prefect server, as two runs of one deployment would.
    env = session_server_env
    rounds = ("conc-a", "conc-b")
    logs = {r: open(tmp_path / f"{r}.log", "w+") for r in rounds}
    procs = {r: subprocess.Popen([sys.executable, "-c", ROUND_SCRIPT, r, config, local_store],
                                 stdout=logs[r], stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True) for r in rounds}
    results = {}
    for r, proc in procs.items():
        try:
            proc.wait(540)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
        logs[r].seek(0)
        output = logs[r].read()
        assert proc.returncode == 0, output[-3000:]
        line = [x for x in output.splitlines() if x.startswith("RESULT ")][-1]
        results[r] = json.loads(line.removeprefix("RESULT "))

    store = open_store(local_store)
    for r, result in results.items():
        rows = read_dataset(local_store, result["dataset_key"])
        assert len(rows) == 1 and set(rows["round_id"]) == {r}
        assert result["dataset_key"].startswith(f"rounds/{r}/")
        assert json.loads(store.get_bytes(result["report_key"])) == result["report"]
        assert store.read_provenance(result["report_key"]).params["round_id"] == r
        for row in rows.itertuples():
            assert store.exists(row.video_key) and store.exists(row.first_frame_key)
    assert len(store.list("checkpoints/")) == 2 * 3  # two chunks + weights, per round
    # Every artifact in the store still matches its own sidecar (get_bytes checks it).
    for key in store.list():
        store.get_bytes(key)
