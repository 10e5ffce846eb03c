"""Human review in the Prefect UI, driven by headless Chromium (Playwright).

A real `prefect server start` (UI on) on a free loopback port; `mora t2v --review ask` as a
subprocess with no terminal, so it waits for a reviewer; the test opens the paused run's page,
presses "Resume", checks from the page that the preview picture has loaded and the preview clip
can play, reads the form generated from `ReviewDecision` and submits it, for the first-frame
pause and then the segment-1 pause; the CLI exits 0 and the run is Completed. The training
round's candidate pick is a flow of this module calling the `decide` task with a split vote.
Each runs on a local store and on an S3 store (moto on loopback).

Needs Debian's Chromium at /usr/bin/chromium and the `playwright` package (its bundled driver
only: no `playwright install`); `.ci/run` installs both. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.prefect_server import PrefectServer, Proc, free_port

CHROMIUM = "/usr/bin/chromium"
# As root on a closed network: no sandbox, no GPU, no background calls home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 60_000  # the UI's first load takes several seconds on 2 busy cores

pytestmark = [
    pytest.mark.integration,
    # One UI server and one browser for the module (module-scoped fixtures): under pytest-xdist
    # its tests run on one worker (`--dist loadgroup`, pyproject.toml).
    pytest.mark.xdist_group("browser-ui"),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run "
                              "does)"),
]
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[browser]')")
expect = sync_api.expect


# --- fixtures: one UI server and one browser for the module -----------------------------------

@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    srv = PrefectServer(root=tmp_path_factory.mktemp("browser-review"), port=free_port())
    try:
        # The UI asks the API at PREFECT_UI_API_URL; its default names port 4200, not ours.
        # The task-run recorder (off for the session's tests) fills the page's task graph.
        srv.start(timeout=120, ui=True, extra_env={
            "PREFECT_UI_API_URL": srv.api_url,
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "true"})
        print(f"\nprefect server with UI up in {srv.timings['server_start']:.1f} s")
        yield srv
    finally:
        problems = srv.stop()
        assert problems == [], problems
        assert srv.leftover_pids() == []


@pytest.fixture(scope="module")
def browser_context():
    started = time.monotonic()
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory(
            prefix="chromium-profile-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(UI_TIMEOUT_MS)
        print(f"chromium up in {time.monotonic() - started:.1f} s")
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    yield page
    page.close()


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_store_url")
    return str(tmp_path / "store")


@pytest.fixture
def start_t2v(ui_server, tmp_path, store_url):
    """Start `mora t2v PROMPT --review ask` with no terminal against the UI server."""
    procs: list[Proc] = []

    def start(prompt: str, *args: str) -> tuple[Proc, Path]:
        out = tmp_path / f"t2v-{len(procs)}.mp4"
        log = tmp_path / f"mora-{len(procs)}.log"
        with open(log, "wb") as sink:
            popen = subprocess.Popen(
                [sys.executable, "-m", "mora.cli", "t2v", prompt, "--review", "ask",
                 "--store", store_url, "--out", str(out), *args],
                cwd=Path(__file__).resolve().parent.parent, env=ui_server.env(),
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True)
        procs.append(Proc(f"mora-t2v-{len(procs)}", popen, log))
        return procs[-1], out

    yield start
    for proc in procs:
        proc.stop()


# --- helpers ----------------------------------------------------------------------------------

def wait_for_review(srv: PrefectServer, proc: Proc, title: str, run_id: str | None = None,
                    timeout: float = 120.0):
    """The pending review whose description contains ``title`` (of ``run_id`` if given)."""
    from prefect.exceptions import PrefectHTTPStatusError

    from mora.cli_review import pending_reviews

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.alive(), f"mora exited {proc.popen.returncode}:\n{proc.tail()}"
        try:
            with srv.api_settings():
                reviews = pending_reviews()
        except PrefectHTTPStatusError as exc:
            # A run caught between its Paused state and saving its form: the sync client
            # answers 404 with this, not ObjectNotFound. Ask again.
            if exc.response.status_code != 404:
                raise
            reviews = []
        for review in reviews:
            if title in review.description and run_id in (None, review.flow_run_id):
                return review
        time.sleep(0.3)
    raise AssertionError(f"no pending review '{title}' after {timeout} s:\n{proc.tail()}")


def run_state(srv: PrefectServer, run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with srv.api_settings(), get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.name


def open_resume_form(page, srv: PrefectServer, run_id: str, title: str):
    """Load the run's page, press Resume; return the dialog once it shows ``title``."""
    page.goto(f"http://127.0.0.1:{srv.port}/runs/flow-run/{run_id}", wait_until="load")
    resume = page.get_by_role("button", name="Resume", exact=True)
    expect(resume).to_be_visible()
    resume.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_text(title)).to_be_visible()
    return dialog


def choose_action(page, dialog, current: str, action: str) -> None:
    """Pick ``action`` in the form's Action select (a listbox; it opens from the keyboard)."""
    select = dialog.get_by_role("button", name=current, exact=True)
    select.focus()
    page.keyboard.press("ArrowDown")
    page.get_by_role("option", name=action, exact=True).click()
    expect(dialog.get_by_role("button", name=action, exact=True)).to_be_visible()


def type_instruction(dialog, text: str) -> None:
    dialog.get_by_role("textbox").fill(text)


# Each preview element of the open dialog: loaded (an image's naturalWidth, a video's readyState
# of HAVE_CURRENT_DATA or more: it can play).
_PREVIEWS_READY = """() => {
    const dialog = document.querySelector('[role=dialog]');
    if (!dialog) return false;
    const images = [...dialog.querySelectorAll('img')], videos = [...dialog.querySelectorAll('video')];
    return images.length + videos.length > 0
        && images.every(i => i.complete && i.naturalWidth > 0)
        && videos.every(v => v.readyState >= 2);
}"""


def assert_previews_shown(page, dialog, images: int, videos: int, shot: Path) -> None:
    """The dialog shows ``images`` loaded pictures and ``videos`` playable clips; screenshot."""
    page.wait_for_function(_PREVIEWS_READY, timeout=UI_TIMEOUT_MS)
    assert dialog.locator("img").count() == images and dialog.locator("video").count() == videos
    if videos:
        playing = dialog.locator("video").first.evaluate(
            "v => new Promise(done => { if (!v.paused) return done(true);"
            " v.addEventListener('playing', () => done(true)); v.play(); })")
        assert playing
    page.screenshot(path=str(shot), animations="disabled")
    print(f"screenshot: {shot}")


def assert_link_for_store(dialog, store_url: str) -> None:
    """An S3 store's review links to a presigned HTTPS (here: loopback HTTP) GET."""
    links = dialog.locator("a", has_text="full size")
    if store_url.startswith("s3://"):
        assert "X-Amz-Signature=" in links.first.get_attribute("href")
    else:
        assert links.count() == 0


def submit(page, dialog, srv: PrefectServer) -> dict:
    """Press Submit; return the server's answer to the resume request (an OrchestrationResult).

    Prefect's resume endpoint reads the run and then writes its state in one DEFERRED SQLite
    transaction; when another writer (the server's own event and task-run services, a log batch)
    commits in between, SQLite refuses the upgrade at once ("database is locked", HTTP 500: busy
    timeouts do not apply to it; seen once in CI, 2026-12-08). The run stays paused and the UI
    keeps the form open with a "Failed to resume flow run" toast, so the reviewer presses Submit
    again: so does this, up to three presses, and only for that error. Any other answer that is
    not an OrchestrationResult fails here with its status, its body and the server's log.
    """
    for press in range(1, 4):
        locked_before = srv.proc.log.read_text(errors="replace").count("database is locked")
        with page.expect_response(lambda r: r.request.method == "POST"
                                  and r.url.endswith("/resume")) as response:
            dialog.get_by_role("button", name="Submit", exact=True).click()
        answer = response.value
        body = answer.text()
        if answer.ok and '"status"' in body:
            return answer.json()
        log = srv.proc.log.read_text(errors="replace")
        if answer.status == 500 and log.count("database is locked") > locked_before and press < 3:
            print(f"resume press {press}: the server's SQLite said 'database is locked'; "
                  "pressing Submit again")
            continue
        raise AssertionError(f"POST /resume answered HTTP {answer.status}: {body[:2000]}\n"
                             f"--- server log ---\n{srv.proc.tail(80)}")
    raise AssertionError("unreachable")


# --- tests ------------------------------------------------------------------------------------

@pytest.mark.timeout(300)
@pytest.mark.usefixtures("tiny_zoo")
def test_review_form_in_the_prefect_ui_resumes_the_run(ui_server, page, start_t2v, tmp_path,
                                                      store_url):
    t0 = time.monotonic()
    proc, out = start_t2v("a fox")
    first = wait_for_review(ui_server, proc, "### Review: first-frame (try 1 of 3)")
    run_id = first.flow_run_id
    print(f"paused at first-frame after {time.monotonic() - t0:.1f} s")

    t1 = time.monotonic()
    dialog = open_resume_form(page, ui_server, run_id, "Review: first-frame (try 1 of 3)")
    print(f"UI form open after {time.monotonic() - t1:.1f} s")
    # The form is what a reviewer sees: the first frame itself, where the full size is, the
    # Action select on its default, the instruction as a plain text box.
    assert_previews_shown(page, dialog, images=1, videos=0, shot=tmp_path / "review-form.png")
    assert_link_for_store(dialog, store_url)
    expect(dialog.get_by_text("Action (Optional)")).to_be_visible()
    expect(dialog.get_by_role("button", name="approve", exact=True)).to_be_visible()
    expect(dialog.get_by_text("Instruction (Optional)")).to_be_visible()
    expect(dialog.get_by_role("button", name="str", exact=True)).to_have_count(0)

    # Input the schema forbids (instruction over max_length=2000): refused, the run stays paused.
    type_instruction(dialog, "x" * 2001)
    assert submit(page, dialog, ui_server)["status"] != "ACCEPT"
    expect(page.get_by_text("is too long").first).to_be_visible()
    page.screenshot(path=str(tmp_path / "review-form-refused.png"), animations="disabled")
    page.wait_for_timeout(2500)  # > the run's 1 s poll interval
    assert run_state(ui_server, run_id) == "Paused" and proc.alive()
    dialog.get_by_role("button", name="Close", exact=True).click()
    expect(dialog).to_be_hidden()

    # Approve (the default) from a fresh form.
    dialog = open_resume_form(page, ui_server, run_id, "Review: first-frame (try 1 of 3)")
    answer = submit(page, dialog, ui_server)
    assert answer["status"] == "ACCEPT", answer
    expect(dialog).to_be_hidden()

    # The run goes on to the first segment and pauses again: the clip plays in the form.
    wait_for_review(ui_server, proc, "### Review: segment-1 (try 1 of 3)", run_id)
    dialog = open_resume_form(page, ui_server, run_id, "Review: segment-1 (try 1 of 3)")
    assert_previews_shown(page, dialog, images=0, videos=1, shot=tmp_path / "segment-form.png")
    assert_link_for_store(dialog, store_url)
    answer = submit(page, dialog, ui_server)
    assert answer["status"] == "ACCEPT", answer

    assert proc.popen.wait(timeout=120) == 0, proc.tail()
    assert f"video: {out}" in proc.log.read_text()
    assert out.stat().st_size > 0
    assert run_state(ui_server, run_id) == "Completed"
    expect(page.get_by_text("Completed").first).to_be_visible()
    print(f"run completed {time.monotonic() - t0:.1f} s after the CLI started")

    # The run's result artifact: the video playing, and the contact sheet.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with ui_server.api_settings(), get_client(sync_client=True) as client:
        markdown = [a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))) if a.type == "markdown"]
    # The result is the run's one markdown artifact. On a loaded machine Prefect's client may
    # resend a POST whose answer timed out (its retry on httpx timeouts), storing it twice.
    assert markdown and {a.key for a in markdown} == {"text-to-video-result"}, markdown
    artifact = markdown[-1]
    page.goto(f"http://127.0.0.1:{ui_server.port}/artifacts/artifact/{artifact.id}",
              wait_until="load")
    page.wait_for_function("""() => {
        const v = document.querySelector('video');
        const i = document.querySelector('img[src^="data:image/png"]');
        return v && v.readyState >= 2 && i && i.complete && i.naturalWidth > 0; }""",
                           timeout=UI_TIMEOUT_MS)
    page.screenshot(path=str(tmp_path / "result-artifact.png"), animations="disabled")


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("tiny_zoo")
def test_edit_without_instruction_is_refused_in_the_ui(ui_server, page, start_t2v, tmp_path,
                                                      store_url):
    if store_url.startswith("s3://"):
        pytest.skip("the form does not depend on the store")
    proc, _ = start_t2v("a heron")
    run_id = wait_for_review(ui_server, proc, "### Review: first-frame (try 1 of 3)").flow_run_id
    dialog = open_resume_form(page, ui_server, run_id, "Review: first-frame (try 1 of 3)")
    choose_action(page, dialog, "approve", "edit")
    answer = submit(page, dialog, ui_server)  # instruction left empty
    page.screenshot(path=str(tmp_path / "edit-without-instruction.png"), animations="disabled")
    assert answer["status"] != "ACCEPT", f"the server accepted an edit with no instruction: " \
        f"{answer['status']}"
    expect(page.get_by_text("Validation failed").first).to_be_visible()
    expect(dialog).to_be_visible()
    page.wait_for_timeout(2500)
    assert run_state(ui_server, run_id) == "Paused" and proc.alive(), proc.tail()

    type_instruction(dialog, "   ")  # blank is no instruction either
    assert submit(page, dialog, ui_server)["status"] != "ACCEPT"
    dialog.get_by_role("textbox").fill("make it night")
    assert submit(page, dialog, ui_server)["status"] == "ACCEPT"
    wait_for_review(ui_server, proc, "### Review: first-frame (try 2 of 3)", run_id)


def _split_vote_flow():
    """A flow that puts three candidate clips in the store and asks `decide` about a vote the
    judges split on: the training round's candidate pick, without a round around it."""
    from prefect import flow

    from configs import load_training_config
    from tasks.candidates import decide
    from storage import open_store
    from storage import media
    from tasks.artifacts import RunContext, provenance, save_image, save_video
    from tasks.review import ReviewPolicy
    from tasks.candidates import Candidate, CandidateSet, Vote

    @flow(name="candidate-pick-check")
    def pick(store_url: str, salt: str):
        store = open_store(store_url)
        ctx = RunContext(sop="training", profile="tiny")
        candidates = []
        for i in range(3):
            frames = np.zeros((8, 48, 64, 3), np.uint8)
            frames[:, :, :, i] = np.linspace(40, 250, 8, dtype=np.uint8)[:, None, None]
            for t in range(8):  # a bar that grows: motion to see
                frames[t, 20:28, :8 + 7 * t] = 255
            first = save_image(store, media.array_to_image(frames[0]), provenance("image", ctx))
            video = save_video(store, frames, 8.0, provenance("video", ctx, salt=salt))
            candidates.append(Candidate(index=i, seed=i, first_frame_key=first, video=video))
        cset = CandidateSet(prompt_index=0, prompt="a red fox", enhanced_prompt="a red fox",
                            candidates=candidates)
        vote = Vote(criterion_id=4, criterion="which video moves most smoothly", agreed=None,
                    judgements=[
                        {"judge": "judge-a", "raw": "2 > 1 > 3", "ranking": [1, 0, 2],
                         "scores": [0.4, 0.9, 0.1]},
                        {"judge": "judge-b", "raw": "1 > 3 > 2", "ranking": [0, 2, 1]}])
        policy = ReviewPolicy(mode="ask", poll_interval_s=1, timeout_s=600)
        return decide(load_training_config("tiny"), store_url, cset, vote, policy)

    return pick


import numpy as np  # noqa: E402  (used by the flow above)


@pytest.mark.timeout(240)
def test_candidate_pick_shows_all_candidates_playing(ui_server, page, tmp_path, store_url):
    import threading
    import uuid

    outcome: dict = {}
    pick = _split_vote_flow()  # imported here, not in the thread (Prefect's plugin loading)

    def run() -> None:
        with ui_server.api_settings():
            try:
                outcome["decision"] = pick(store_url, uuid.uuid4().hex)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Alive:  # wait_for_review's view of the flow thread
        popen = type("P", (), {"returncode": None})()

        def alive(self):
            return thread.is_alive()

        def tail(self):
            return repr(outcome.get("error"))

    review = wait_for_review(ui_server, Alive(), "### Review: pick-1 (pick 1-3 or reject)")
    assert review.kind == "pick"
    dialog = open_resume_form(page, ui_server, review.flow_run_id, "Review: pick-1")
    for text in ("which video moves most smoothly", "judge-a", "judge-b", "why they differ",
                 "puts 2 first", "puts 1 first", "2: 0.9"):
        expect(dialog.get_by_text(text).first).to_be_visible()
    assert_previews_shown(page, dialog, images=0, videos=1, shot=tmp_path / "pick-form.png")
    assert_link_for_store(dialog, store_url)
    width = dialog.locator("video").first.evaluate("v => v.videoWidth")
    assert width == 3 * 64  # the three candidates side by side

    # No default action: the reviewer chooses. The candidate number is bounded to 1..3.
    select = dialog.get_by_text("pick: keep one candidate").locator("xpath=following::button[1]")
    select.focus()
    page.keyboard.press("ArrowDown")
    page.get_by_role("option", name="pick", exact=True).click()
    expect(dialog.get_by_role("button", name="pick", exact=True)).to_be_visible()
    number = dialog.get_by_role("spinbutton")
    number.fill("4")  # there are three: the server refuses it
    assert submit(page, dialog, ui_server)["status"] != "ACCEPT"
    page.wait_for_timeout(2500)  # > the run's 1 s poll interval
    page.screenshot(path=str(tmp_path / "pick-form-refused.png"), animations="disabled")
    assert run_state(ui_server, review.flow_run_id) == "Paused" and thread.is_alive()
    number.fill("2")
    assert submit(page, dialog, ui_server)["status"] == "ACCEPT"
    thread.join(60)
    assert "error" not in outcome, outcome["error"]
    assert (outcome["decision"].outcome, outcome["decision"].chosen) == ("human", 1)
    assert run_state(ui_server, review.flow_run_id) == "Completed"
