"""Told when a review waits: `mora review notify URL` creates the automation shipped in
configs/automations/review-waiting.yaml on a real `prefect server start`; a flow run tagged
`mora` pauses twice for review; a webhook receiver on loopback gets one Slack-style call per
pause, with the run's name, the stage and the link to its page."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.mora_cli import mora

pytestmark = pytest.mark.integration


class Hooks(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Hooks.calls.append({"content_type": self.headers.get("Content-Type"),
                            "body": json.loads(body)})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def _two_reviews():
    from prefect import flow

    from tasks.review import ReviewPolicy, human_review

    @flow(name="two-reviews")
    def two_reviews() -> None:
        policy = ReviewPolicy(mode="ask", poll_interval_s=1, timeout_s=300)
        human_review("first-frame", 1, "a preview", policy)
        human_review("segment-1", 1, "a preview", policy)

    return two_reviews


@pytest.mark.timeout(600)
def test_one_webhook_call_per_review_pause_with_the_run_link(real_server):
    import prefect

    from mora.cli_review import answer_review, pending_reviews
    from tasks.review import ReviewDecision

    receiver = HTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    Hooks.calls.clear()
    ui = f"http://127.0.0.1:{real_server.port}"
    try:
        real_server.start(timeout=120, extra_env={"PREFECT_UI_URL": ui})
        with real_server.api_settings():  # in this process (tests/mora_cli.py)
            made = mora("review", "notify", f"http://127.0.0.1:{receiver.server_port}/hook",
                        session_server=True)
        assert made.returncode == 0, made.stderr
        assert "automation 'mora-review-waiting'" in made.stdout

        outcome: dict = {}

        def run() -> None:
            with real_server.api_settings(), prefect.tags("mora"):
                try:
                    _two_reviews()()
                except BaseException as exc:  # noqa: BLE001 - handed to the test
                    outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        run_id = None
        for stage, calls in (("first-frame", 1), ("segment-1", 2)):
            # First the pause (generation takes a while on a busy 2-core machine), then its call.
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and "error" not in outcome:
                with real_server.api_settings():
                    if pending_reviews():
                        break
                time.sleep(0.5)
            deadline = time.monotonic() + 90
            while len(Hooks.calls) < calls and time.monotonic() < deadline:
                time.sleep(0.3)
            assert len(Hooks.calls) == calls, (stage, Hooks.calls, outcome)
            with real_server.api_settings():
                review, = pending_reviews()
                run_id = review.flow_run_id
                text = Hooks.calls[-1]["body"]["text"]
                assert Hooks.calls[-1]["content_type"] == "application/json"
                assert f"Mora run {review.flow_run_name} waits for a review of {stage} (try 1 of 3)" in text
                assert text.endswith(f"{ui}/runs/flow-run/{run_id}"), text
                answer_review(run_id, ReviewDecision(action="approve"))
        thread.join(60)
        assert "error" not in outcome, outcome
        time.sleep(3)
        assert len(Hooks.calls) == 2  # one per pause, none for the other state changes

        with real_server.api_settings():
            again = mora("review", "notify", "ftp://x", session_server=True)
        assert again.returncode == 2
        assert again.stderr.strip() == ("error: the webhook must be an http:// or https:// URL "
                                        "without spaces")
    finally:
        receiver.shutdown()
