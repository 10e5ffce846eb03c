"""Human review in the Prefect UI, driven by headless Chromium (Playwright).

A real `prefect server start` (UI on) on a free loopback port; `mora t2v --review ask` as a
subprocess with no terminal, so it waits for a reviewer; the test opens the paused run's page,
presses "Resume", reads the form generated from `ReviewDecision` and submits it, for the
first-frame pause and then the segment-1 pause; the CLI exits 0 and the run is Completed.

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


@pytest.fixture
def start_t2v(ui_server, tmp_path):
    """Start `mora t2v PROMPT --review ask` with no terminal against the UI server."""
    procs: list[Proc] = []

    def start(prompt: str, *args: str) -> tuple[Proc, Path]:
        out = tmp_path / f"t2v-{len(procs)}.mp4"
        log = tmp_path / f"mora-{len(procs)}.log"
        with open(log, "wb") as sink:
            popen = subprocess.Popen(
                [sys.executable, "-m", "mora.cli", "t2v", prompt, "--review", "ask",
                 "--store", str(tmp_path / "store"), "--out", str(out), *args],
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

    from tasks.review import pending_reviews

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
    """Switch the Instruction field from None to str and type ``text``."""
    dialog.get_by_role("button", name="str", exact=True).click()
    box = dialog.get_by_role("textbox")
    box.fill(text)


def submit(page, dialog) -> dict:
    """Press Submit; return the server's answer to the resume request."""
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/resume")) as response:
        dialog.get_by_role("button", name="Submit", exact=True).click()
    return response.value.json()


# --- tests ------------------------------------------------------------------------------------

@pytest.mark.timeout(300)
@pytest.mark.usefixtures("tiny_zoo")
def test_review_form_in_the_prefect_ui_resumes_the_run(ui_server, page, start_t2v, tmp_path):
    t0 = time.monotonic()
    proc, out = start_t2v("a fox")
    first = wait_for_review(ui_server, proc, "### Review: first-frame (try 1 of 3)")
    run_id = first.flow_run_id
    preview = first.description.split("`")[1]  # the first frame's path, in a code span
    assert preview.endswith(".png") and Path(preview).exists()
    print(f"paused at first-frame after {time.monotonic() - t0:.1f} s")

    t1 = time.monotonic()
    dialog = open_resume_form(page, ui_server, run_id, "Review: first-frame (try 1 of 3)")
    print(f"UI form open after {time.monotonic() - t1:.1f} s")
    # The form is what a reviewer sees: the markdown description with the preview path, the
    # Action select on its default, the optional instruction.
    expect(dialog.get_by_text(preview)).to_be_visible()
    expect(dialog.get_by_text("Action (Optional)")).to_be_visible()
    expect(dialog.get_by_role("button", name="approve", exact=True)).to_be_visible()
    expect(dialog.get_by_text("Instruction (Optional)")).to_be_visible()
    page.screenshot(path=str(tmp_path / "review-form.png"), animations="disabled")
    print(f"screenshot: {tmp_path / 'review-form.png'}")

    # Input the schema forbids (instruction over max_length=2000): the form refuses it itself.
    type_instruction(dialog, "x" * 2001)
    resumes: list[str] = []
    page.on("request", lambda r: resumes.append(r.url) if r.url.endswith("/resume") else None)
    dialog.get_by_role("button", name="Submit", exact=True).click()
    expect(dialog.get_by_text("is not valid under any of the given schemas")).to_be_visible()
    page.screenshot(path=str(tmp_path / "review-form-refused.png"), animations="disabled")
    page.wait_for_timeout(2500)  # > the run's 1 s poll interval
    assert resumes == [] and run_state(ui_server, run_id) == "Paused" and proc.alive()
    dialog.get_by_role("button", name="Close", exact=True).click()
    expect(dialog).to_be_hidden()

    # Approve (the default) from a fresh form.
    dialog = open_resume_form(page, ui_server, run_id, "Review: first-frame (try 1 of 3)")
    answer = submit(page, dialog)
    assert answer["status"] == "ACCEPT", answer
    expect(dialog).to_be_hidden()

    # The run goes on to the first segment and pauses again: answer that one in the UI too.
    segment = wait_for_review(ui_server, proc, "### Review: segment-1 (try 1 of 3)", run_id)
    dialog = open_resume_form(page, ui_server, run_id, "Review: segment-1 (try 1 of 3)")
    expect(dialog.get_by_text(segment.description.split("`")[1])).to_be_visible()
    answer = submit(page, dialog)
    assert answer["status"] == "ACCEPT", answer

    assert proc.popen.wait(timeout=120) == 0, proc.tail()
    assert f"video: {out}" in proc.log.read_text()
    assert out.stat().st_size > 0
    assert run_state(ui_server, run_id) == "Completed"
    expect(page.get_by_text("Completed").first).to_be_visible()
    print(f"run completed {time.monotonic() - t0:.1f} s after the CLI started")


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("tiny_zoo")
def test_edit_without_instruction_is_refused_in_the_ui(ui_server, page, start_t2v, tmp_path):
    proc, _ = start_t2v("a heron")
    run_id = wait_for_review(ui_server, proc, "### Review: first-frame (try 1 of 3)").flow_run_id
    dialog = open_resume_form(page, ui_server, run_id, "Review: first-frame (try 1 of 3)")
    choose_action(page, dialog, "approve", "edit")
    answer = submit(page, dialog)  # instruction left at None
    page.screenshot(path=str(tmp_path / "edit-without-instruction.png"), animations="disabled")
    assert answer["status"] != "ACCEPT", f"the server accepted an edit with no instruction: " \
        f"{answer['status']}"
    expect(page.get_by_text("Validation failed").first).to_be_visible()
    expect(dialog).to_be_visible()
    page.wait_for_timeout(2500)
    assert run_state(ui_server, run_id) == "Paused" and proc.alive(), proc.tail()

    type_instruction(dialog, "   ")  # blank is no instruction either
    assert submit(page, dialog)["status"] != "ACCEPT"
    dialog.get_by_role("textbox").fill("make it night")
    assert submit(page, dialog)["status"] == "ACCEPT"
    wait_for_review(ui_server, proc, "### Review: first-frame (try 2 of 3)", run_id)
