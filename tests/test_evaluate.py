"""`mora eval` and the evaluate flow: twelve SPEC §6 records per video, the results table in the
store (parquet + csv, with provenance) and on the run page, the paper's table beside ours."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import numpy as np
import pandas as pd
import pytest

from metrics import METRIC_NAMES
from metrics.paper_tables import TABLE1, TABLE2, TABLE5, paper_markdown
from storage import open_store
from tasks.evaluate import vbench_name
from storage.media import encode_mp4
from tests.mora_cli import mora, run_cli

KINDS = {"vbench", "proxy", "n/a"}
MORA = [sys.executable, "-m", "mora.cli"]


def _moving_square(frames=16, size=64) -> np.ndarray:
    video = np.full((frames, size, size, 3), 30, np.uint8)
    for t in range(frames):
        video[t, 20:40, 3 * t:3 * t + 16] = (220, 180, 40)
    return video


def _still_gradient(frames=12, size=48) -> np.ndarray:
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    frame = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                      np.full((size, size), 90, np.uint8)], axis=-1)
    return np.repeat(frame[None], frames, axis=0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("videos")
    paths = []
    for name, frames in (("a.mp4", _moving_square()), ("b.mp4", _still_gradient())):
        (folder / name).write_bytes(encode_mp4(frames, 8))
        paths.append(str(folder / name))
    return paths


def _check_records(records, videos):
    assert [r["video"] for r in records] == [v for v in videos for _ in METRIC_NAMES]
    for video in videos:
        mine = [r for r in records if r["video"] == video]
        assert [r["metric"] for r in mine] == list(METRIC_NAMES)
    for r in records:
        assert set(r) == {"video", "metric", "value", "method", "kind"}
        assert r["kind"] in KINDS and isinstance(r["method"], str) and r["method"]
        if r["kind"] == "n/a":
            assert r["value"] is None
        else:
            assert isinstance(r["value"], float) and np.isfinite(r["value"])
        if r["metric"] == "dynamic_degree" and r["value"] is not None:
            assert r["value"] in (0.0, 1.0)


# --------------------------------------------------------------------------- the flow

@pytest.mark.usefixtures("prefect_server")
def test_flow_stores_table_with_provenance_and_publishes_artifacts(videos, local_store):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.evaluate import evaluate

    result = evaluate(videos=videos, prompt="a yellow box slides right", store=local_store)
    _check_records(result.records, videos)
    by_video = {r["video"]: r for r in result.records if r["metric"] == "dynamic_degree"}
    assert by_video[videos[0]]["value"] == 1.0 and by_video[videos[1]]["value"] == 0.0

    # The same rows as parquet and csv, both with the evaluated videos as provenance parents.
    store = open_store(local_store)
    assert result.parquet_key.startswith("eval/") and result.parquet_key.endswith(".parquet")
    assert result.csv_key == result.parquet_key.removesuffix(".parquet") + ".csv"
    parquet = pd.read_parquet(io.BytesIO(store.get_bytes(result.parquet_key)))
    csv = pd.read_csv(io.BytesIO(store.get_bytes(result.csv_key)), keep_default_na=False,
                      na_values={"value": [""]})  # kind "n/a" is a string, not missing
    expected = pd.DataFrame.from_records(result.records).astype({"value": "float64"})
    pd.testing.assert_frame_equal(parquet, expected)
    pd.testing.assert_frame_equal(csv, expected)
    assert len(result.inputs) == 2
    for key in (result.parquet_key, result.csv_key):
        prov = store.read_provenance(key)
        assert prov.kind == "eval" and prov.parents == result.inputs and prov.flow_run_id
        assert prov.prompt == "a yellow box slides right"
    for key, path in zip(result.inputs, videos):
        assert store.get_bytes(key) == Path(path).read_bytes()

    # The run page: the results table and ours beside the paper's Table 1.
    run_id = store.read_provenance(result.parquet_key).flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)])))
    by_type = {a.type: a for a in artifacts}
    assert by_type["table"].key == "mora-eval"
    table = by_type["table"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert len(rows) == 24 and rows[0]["video"] == videos[0]
    assert by_type["markdown"].data == result.markdown
    assert "quoted from the paper (Mora, Table 1)" in result.markdown and "0.797" in result.markdown


@pytest.mark.usefixtures("prefect_server")
def test_rerun_is_cached_and_names_videos_as_given(videos, local_store, monkeypatch):
    import metrics

    from flows.evaluate import evaluate

    first = evaluate(videos=videos[:1], store=local_store)
    calls = []
    original = metrics.evaluate_video
    monkeypatch.setattr(metrics, "evaluate_video",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    again = evaluate(videos=videos[:1], store=local_store)
    assert calls == [] and again.records == first.records
    # The same content under another name (its store key) is evaluated under that name.
    key = f"store://{first.inputs[0]}"
    both = evaluate(videos=[videos[0], key], store=local_store)
    assert [r["video"] for r in both.records[::12]] == [videos[0], key]
    for mine, other in zip(both.records[:12], both.records[12:]):
        assert mine["kind"] == other["kind"]
        assert mine["value"] == (None if other["value"] is None
                                 else pytest.approx(other["value"], rel=1e-9))


@pytest.mark.usefixtures("prefect_server")
def test_vbench_export_names_files_by_prompt(videos, local_store):
    from flows.evaluate import evaluate

    result = evaluate(videos=videos, prompt="a red/blue ball", store=local_store, task="i2v",
                      vbench=True)
    assert len(result.vbench_keys) == 2
    run = result.vbench_keys[0].split("/")[1]
    assert result.vbench_keys == [f"vbench/{run}/a red blue ball-0.mp4",
                                  f"vbench/{run}/a red blue ball-1.mp4"]
    store = open_store(local_store)
    for key, parent in zip(result.vbench_keys, result.inputs):
        assert store.read_provenance(key).parents == [parent]
    assert "Mora, Table 2" in result.markdown and "VideoTI" in result.markdown


def _vbench_prompt(name: str) -> str:
    """VBench's custom_input rule (vbench.utils.get_prompt_from_filename)."""
    stem = Path(name).stem
    return re.sub(r"-\d+$", "", stem)


@pytest.mark.parametrize("prompt, expected", [
    ("a cat playing piano", "a cat playing piano"),
    ("a/b\\c\nd", "a b c d"),
    ("ends with -3", "ends with -3"),
    ("..", "video"),
])
def test_vbench_name_round_trips_through_vbench_rule(prompt, expected):
    name = vbench_name(prompt, 4)
    assert name.endswith("-4.mp4") and "/" not in name and _vbench_prompt(name) == expected
    assert len(vbench_name("x" * 1000, 0).encode()) < 255


# --------------------------------------------------------------------------- the paper's tables

def test_paper_markdown_sets_ours_beside_quoted_rows():
    records = [
        {"video": v, "metric": m, "value": val, "method": "x", "kind": kind}
        for v, vals in (("a.mp4", 0.5), ("b.mp4", 0.7))
        for m, val, kind in (("subject_consistency", vals, "proxy"),
                             ("temporal_flickering", vals, "vbench"),
                             ("aesthetic_quality", None, "n/a"))
    ]
    md = paper_markdown(records)
    lines = md.splitlines()
    ours = next(line for line in lines if line.startswith("| ours"))
    sora = next(line for line in lines if line.startswith("| Sora"))
    assert "mean of 2 video(s)" in ours
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert cells[2:] == ["n/a", "0.600†", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a"]
    assert sora.split(" | ")[1:] == ["quoted from the paper (Mora, Table 1)", "0.797", "0.95",
                                     "0.96", "1.00", "0.60", "0.69", "0.58", "0.35 |"]
    assert "| Mora (Open-Sora-Plan) | quoted from the paper (Mora, Table 1) | 0.800 | 0.98" in md
    connect = paper_markdown(records, "connect")
    assert "quoted from the paper (Mora, Table 2)" in connect and "| Tmean |" in connect
    assert "| Sora | quoted from the paper (Mora, Table 2) | 0.52 | 0.64 |" in connect
    with pytest.raises(ValueError, match="unknown task"):
        paper_markdown(records, "nope")


def test_paper_tables_are_complete():
    for table in (TABLE1, TABLE5, *TABLE2.values()):
        assert all(len(row.values) == len(table.columns) for row in table.rows)
        assert all(m is None or m in METRIC_NAMES for _, m in table.columns)
    assert TABLE1.rows[0].model == "Sora" and TABLE1.rows[0].values[0] == 0.797
    assert TABLE2["extend"].rows[-1].values == (0.98, 0.45, 0.23)


@pytest.mark.usefixtures("prefect_server")
def test_reference_and_neighbours_give_tcon_and_tmean(videos, local_store, tmp_path):
    """TCON needs the video an extension extends, Tmean the clips around a transition: given
    them, both are computed (proxy) and differ from n/a; a transition unlike its neighbours
    scores a lower Tmean than one that continues them."""
    from flows.evaluate import evaluate

    square, gradient = videos
    like = tmp_path / "like.mp4"
    like.write_bytes(encode_mp4(_moving_square()[::-1].copy(), 8))
    extended = evaluate(videos=[square], store=local_store, task="extend", reference=square)
    tcon = next(r for r in extended.records if r["metric"] == "tcon")
    assert tcon["kind"] == "proxy" and tcon["value"] == pytest.approx(1.0, abs=1e-6)
    assert "input and extended videos" in tcon["method"]

    connected = evaluate(videos=[str(like), gradient], store=local_store, task="connect",
                         before=square, after=square)
    tmean = {r["video"]: r for r in connected.records if r["metric"] == "tmean"}
    assert all(r["kind"] == "proxy" for r in tmean.values())
    assert tmean[str(like)]["value"] > tmean[gradient]["value"]
    assert "| Tmean |" in connected.markdown.splitlines()[2] or "Tmean" in connected.markdown
    with pytest.raises(Exception, match="give before and after"):
        evaluate(videos=[square], store=local_store, before=square)


# --------------------------------------------------------------------------- the command

def _run(*args, cwd, env=None):
    return subprocess.run([*MORA, *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=env or {**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize("case", ["missing", "garbage", "format", "task", "folder",
                                  "before-only", "reference-missing"])
def test_eval_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, videos,
                                                               case):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 8)
    (tmp_path / "dir.mp4").mkdir()
    args, message = {
        "missing": (["nope.mp4"], "error: video 'nope.mp4' does not exist"),
        "garbage": ([videos[0], "bad.mp4"], "error: video 'bad.mp4' is not a readable video"),
        "format": ([videos[0], "--format", "xml"], "error: --format must be table, json or csv"),
        "task": ([videos[0], "--task", "x"], "error: --task must be one of"),
        "folder": (["dir.mp4"], "error: video 'dir.mp4' is a folder"),
        "before-only": ([videos[0], "--before", videos[1]], "error: Tmean needs both clips"),
        "reference-missing": ([videos[0], "--reference", "gone.mp4"],
                              "error: reference 'gone.mp4' does not exist"),
    }[case]
    monkeypatch.chdir(tmp_path)  # in this process (tests/mora_cli.py), as the other tables are
    code, stdout, stderr = run_cli(["eval", *args, "--store", str(tmp_path / "store")])
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), stderr
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4", "dir.mp4"]


def test_eval_bad_input_as_a_process_exits_2_with_one_line(tmp_path):
    """The table above runs in-process; here one case as a user meets it: a process."""
    result = _run("eval", "nope.mp4", "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: video 'nope.mp4' does not exist"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_eval_json_is_the_spec_records_on_stdout(tmp_path, videos):
    result = mora("eval", videos[0], "--format", "json", "--prompt", "a box",
                  "--store", str(tmp_path / "store"), cwd=tmp_path, session_server=True)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    _check_records(records, [videos[0]])
    assert "results: " in result.stderr and "store: " in result.stderr
    stored = open_store(str(tmp_path / "store")).list("eval/")
    assert {Path(k).suffix for k in stored} == {".parquet", ".csv"}
