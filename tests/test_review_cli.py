"""`mora review …` against a Prefect server, and `mora t2v --review ask` answered on a terminal."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from tests.mora_cli import mora
from tests.test_review import ASK, FlowThread, next_pause

MORA = [sys.executable, "-m", "mora.cli"]


@pytest.mark.usefixtures("tiny_zoo")
def test_review_commands_answer_a_paused_run(prefect_server, local_store, tmp_path):
    run = FlowThread(prompt="a windmill at dawn", store=local_store, seed=12, review=ASK)
    run.start()
    pause = next_pause()
    listed = mora("review", "list", session_server=True)
    assert listed.returncode == 0 and pause.flow_run_id in listed.stdout
    assert "Review: first-frame (try 1 of 3)" in listed.stdout
    shown = mora("review", "show", pause.flow_run_id, session_server=True)
    assert shown.returncode == 0 and "first frame" in shown.stdout and ".png" in shown.stdout
    assert "base64" not in shown.stdout and "[inline image/png preview" in shown.stdout
    saved = mora("review", "show", pause.flow_run_id, "--save", str(tmp_path / "seen"),
                 session_server=True)
    png = tmp_path / "seen" / f"{pause.flow_run_id}-1.png"
    assert saved.returncode == 0 and f"preview: {png}" in saved.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = mora("review", "edit", pause.flow_run_id, " ", session_server=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: instruction is empty"
    ok = mora("review", "approve", pause.flow_run_id, session_server=True)
    assert ok.returncode == 0 and "approve: flow run" in ok.stdout
    segment = next_pause()
    assert "segment-1 (try 1 of 3)" in segment.description
    saved = mora("review", "show", segment.flow_run_id, "--save", str(tmp_path / "seen"),
                 session_server=True)
    assert f"preview: {tmp_path / 'seen' / segment.flow_run_id}-1.mp4" in saved.stdout
    assert mora("review", "regenerate", segment.flow_run_id, session_server=True).returncode == 0
    again = next_pause()
    assert "segment-1 (try 2 of 3)" in again.description
    assert mora("review", "approve", again.flow_run_id, session_server=True).returncode == 0
    run.join(60)
    assert run.error is None and run.result.video.num_frames == 9
    late = mora("review", "approve", pause.flow_run_id, session_server=True)
    assert late.returncode == 2 and "is not waiting for a review (state: Completed)" in late.stderr


def test_review_bad_input():
    assert mora("review", "approve", "nope").stderr.strip() == "error: 'nope' is not a flow run id"
    result = mora("t2v", "a cat", "--review", "maybe")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --review must be auto or ask, got 'maybe'"


@pytest.mark.integration
@pytest.mark.usefixtures("tiny_zoo")
def test_t2v_review_ask_on_a_terminal(tmp_path, session_server_env):
    """The run pauses, the terminal shows the preview path and asks; answers resume the run.
    (On the session's server: the temporary one is tests/test_local_server.py's subject.)"""
    master, slave = os.openpty()
    out = tmp_path / "ask.mp4"
    stdout = tmp_path / "stdout.txt"
    proc = subprocess.Popen(
        [*MORA, "t2v", "a fox", "--review", "ask", "--store", str(tmp_path / "store"),
         "--out", str(out)], stdin=slave, stdout=stdout.open("w"), stderr=subprocess.PIPE,
        text=True, env=session_server_env)
    os.set_blocking(proc.stderr.fileno(), False)
    answers = ["edit", "make it night", "approve", "approve"]
    seen, deadline = "", time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 0.5)[0]:
            seen += proc.stderr.read() or ""
            asked = seen.count("review [approve/regenerate/edit]") + seen.count("instruction:")
            if answers and asked > 4 - len(answers):  # a prompt is waiting for its answer
                os.write(master, (answers.pop(0) + "\n").encode())
    os.close(master)
    os.close(slave)
    assert proc.wait(30) == 0, seen[-3000:]
    assert answers == []
    assert "Review: first-frame (try 1 of 3)" in seen and "Review: first-frame (try 2 of 3)" in seen
    assert "Review: segment-1 (try 1 of 3)" in seen and f"video: {out}" in stdout.read_text()
    assert "base64" not in seen and seen.count("preview: ") == 3, seen[-3000:]
    assert out.stat().st_size > 0
