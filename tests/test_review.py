"""Human review: a real flow run pauses under the Prefect test server and is answered through
the same client calls `mora review` uses (approve, regenerate up to the limit, edit, timeouts)."""

import threading
import time

import pytest
from pydantic import ValidationError

from flows.stages import ReviewLimitReached
from flows.text_to_video import text_to_video
from configs.errors import MoraError
from storage import open_store
from mora.cli_review import answer_review, pending_review, pending_reviews
from tasks.review import ReviewDecision, ReviewPolicy, ReviewTimedOut

pytestmark = pytest.mark.usefixtures("prefect_server", "tiny_zoo")

ASK = ReviewPolicy(mode="ask", poll_interval_s=1, timeout_s=120)


class FlowThread(threading.Thread):
    def __init__(self, **params):
        super().__init__(daemon=True)
        self.params, self.result, self.error = params, None, None

    def run(self):
        try:
            self.result = text_to_video(**self.params)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc


_answered: set[str] = set()


def next_pause(timeout=90.0):
    """The next review pause no test has answered yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for review in pending_reviews():
            if review.flow_run_id not in _answered:
                return review
        time.sleep(0.3)
    raise AssertionError("no flow run paused for review")


def answer(review, **decision):
    _answered.add(review.flow_run_id)
    answer_review(review.flow_run_id, ReviewDecision(**decision))
    _wait_running(review.flow_run_id)


def _wait_running(run_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pending_review(run_id)
        except MoraError:
            _answered.discard(run_id)
            return
        time.sleep(0.2)


def test_approve_each_stage(local_store):
    run = FlowThread(prompt="a kite over a beach", segments=2, store=local_store, seed=3,
                     review=ASK)
    run.start()
    first = next_pause()
    assert "first-frame (try 1 of 3)" in first.description
    assert "![first frame](data:image/png;base64," in first.description
    frame_path = first.description.split("`")[1]
    assert open_store(local_store).uri(frame_path.split(local_store + "/")[1]) == frame_path
    answer(first, action="approve")
    for segment in (1, 2):
        pause = next_pause()
        assert f"segment-{segment} (try 1 of 3)" in pause.description
        assert '<video src="data:video/mp4;base64,' in pause.description
        assert f"**segment {segment}** (9 frames" in pause.description
        assert ".mp4`" in pause.description  # where the full clip is
        answer(pause, action="approve")
    run.join(60)
    assert run.error is None and run.result.video.num_frames == 18


def test_regenerate_uses_new_seeds_then_stops_at_the_limit(local_store):
    run = FlowThread(prompt="a tram in the rain", store=local_store, seed=40, review=ASK)
    run.start()  # the default policy: at most 3 tries per stage (paper A.4)
    for attempt in (1, 2, 3):
        pause = next_pause()
        assert f"(try {attempt} of 3)" in pause.description
        answer(pause, action="regenerate")
    run.join(60)
    assert isinstance(run.error, ReviewLimitReached)
    assert str(run.error) == "first frame was not approved after 3 tries; stopping"
    store = open_store(local_store)
    seeds = sorted(store.read_provenance(k).seed for k in store.list("image/"))
    assert seeds == [40, 41, 42]  # the first try and two regenerations; no video was made
    assert store.list("video/") == []


def test_edit_applies_image_to_image_to_the_first_frame(local_store):
    run = FlowThread(prompt="a castle on a hill", store=local_store, seed=8, review=ASK)
    run.start()
    answer(next_pause(), action="edit", instruction="make it night")
    again = next_pause()
    assert "(try 2 of 3)" in again.description
    answer(again, action="approve")
    answer(next_pause(), action="approve")
    run.join(60)
    assert run.error is None
    store = open_store(local_store)
    edited = store.read_provenance(run.result.first_frame_key)
    assert edited.params["stage"] == "edit" and edited.params["instruction"] == "make it night"
    original = store.read_provenance(edited.parents[0])
    assert original.params["stage"] == "first_frame" and original.seed == 8


def test_timeout_policy_approve_goes_on(local_store):
    policy = ASK.model_copy(update={"timeout_s": 2, "on_timeout": "approve"})
    result = text_to_video(prompt="a quiet pond", store=local_store, seed=2, review=policy)
    assert result.video.num_frames == 9


def test_timeout_policy_fail_ends_the_run_with_a_message(local_store):
    policy = ASK.model_copy(update={"timeout_s": 2, "on_timeout": "fail"})
    with pytest.raises(ReviewTimedOut, match="review of first-frame got no answer within 2 s"):
        text_to_video(prompt="a quiet pond", store=local_store, seed=3, review=policy)


def test_invalid_answers_are_refused():
    with pytest.raises(ValidationError, match="edit needs an instruction"):
        ReviewDecision(action="edit")
    with pytest.raises(ValidationError):
        ReviewDecision(action="delete-everything")
    with pytest.raises(MoraError, match="is not a flow run id"):
        answer_review("not-a-uuid", ReviewDecision())
    with pytest.raises(MoraError, match="no flow run"):
        answer_review("00000000-0000-0000-0000-000000000000", ReviewDecision())


@pytest.fixture
def resume_answers_500(monkeypatch):
    """The server refuses the next ``count[0]`` resumes with HTTP 500, as SQLite's "database is
    locked" makes it do (README "Its database is SQLite"); below Prefect's client and its
    retries, so those run as they do against the real refusal."""
    import httpx

    count, sent = [1], []
    real_send = httpx.Client.send

    def send(self, request, *args, **kwargs):
        if request.method == "POST" and request.url.path.endswith("/resume"):
            sent.append(request.url.path)
            if count[0] > 0:
                count[0] -= 1
                return httpx.Response(500, json={"exception_message": "Internal Server Error"},
                                      request=request)
        return real_send(self, request, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", send)
    return count, sent


def test_a_resume_the_server_refuses_once_is_sent_again(local_store, resume_answers_500):
    count, sent = resume_answers_500
    run = FlowThread(prompt="a lighthouse at dusk", store=local_store, seed=12, review=ASK)
    run.start()
    answer(next_pause(), action="approve")  # refused once, sent again by the client
    assert len(sent) == 2 and count[0] == 0
    answer(next_pause(), action="approve")
    run.join(60)
    assert run.error is None


def test_a_resume_the_server_keeps_refusing_is_one_line(local_store, resume_answers_500):
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    count, sent = resume_answers_500
    count[0] = 10**6
    run = FlowThread(prompt="a harbour crane", store=local_store, seed=13, review=ASK)
    run.start()
    pause = next_pause()
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 1}), pytest.raises(
            MoraError, match=r"^cannot resume flow run [0-9a-f-]+: the server answered HTTP 500 "
                             r"\(its log says why\); try again$"):
        answer_review(pause.flow_run_id, ReviewDecision(action="approve"))
    assert len(sent) == 2
    count[0] = 0
    answer(pause, action="approve")  # still paused: a second try goes through
    answer(next_pause(), action="approve")
    run.join(60)
    assert run.error is None
