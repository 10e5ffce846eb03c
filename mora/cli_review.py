"""`mora review …`: answer paused runs through the Prefect API, and the terminal reviewer that
`mora t2v --review ask` uses to answer its own run's pauses on stdin, and the review client they
share (the pause itself, and the answers' types, live in tasks/review.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

import typer
from pydantic import BaseModel, Field
from rich.console import Console
from rich.prompt import Prompt

from configs.errors import MoraError

if TYPE_CHECKING:
    from tasks.review import CandidateDecision, ReviewDecision

review_app = typer.Typer(help="Answer flow runs paused for a human review (paper A.4).",
                         no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True)

RunArg = typer.Argument(..., help="flow run id (see `mora review list`)")
AUTOMATION_FILE = Path(__file__).resolve().parent.parent / "configs" / "automations" / \
    "review-waiting.yaml"
WEBHOOK_BLOCK = "mora-review-webhook"


def _server_for(run: str | None = None) -> None:
    """A run id must parse, and a server must be configured: a temporary server (what Prefect
    starts without PREFECT_API_URL) knows no other process's runs."""
    from prefect.settings import PREFECT_API_URL


    if run is not None:
        _uuid(run)
    if not PREFECT_API_URL.value():
        raise MoraError("`mora review` needs the Prefect server the run uses: set PREFECT_API_URL "
                        "(e.g. http://127.0.0.1:4200/api after `prefect server start`)")


def _answer(run: str, **decision: Any) -> None:
    from tasks.review import CandidateDecision, ReviewDecision

    _server_for(run)
    kind = CandidateDecision if decision["action"] in ("pick", "reject") else ReviewDecision
    answer_review(run, kind(**decision))
    out.print(f"{decision['action']}: flow run {run} resumed")


@review_app.command("list")
def list_reviews() -> None:
    """Runs waiting for a review, newest first."""

    _server_for()
    reviews = pending_reviews()
    if not reviews:
        out.print("no flow run is waiting for a review")
    for review in reviews:
        title = review.description.splitlines()[0].lstrip("# ") if review.description else ""
        out.print(f"{review.flow_run_id}  {review.flow_run_name}  {title}")


def save_previews(review, folder: Path) -> list[Path]:
    """Write a review's inline previews (images, the clip, the candidates' tiled clip) as
    files ``<run id>-<n>.<suffix>`` in ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for n, (suffix, data) in enumerate(preview_media(review.description), 1):
            path = folder / f"{review.flow_run_id}-{n}{suffix}"
            path.write_bytes(data)
            paths.append(path)
    except OSError as exc:
        raise MoraError(f"cannot write previews to '{folder}': {exc.strerror or exc}") from None
    return paths


@review_app.command("show")
def show(run: str = RunArg,
         save: Optional[Path] = typer.Option(None, "--save", help="write the preview media "
                                             "(images, clips) to this folder")) -> None:
    """What a paused run asks about: the stage, the try, the preview."""

    _server_for(run)
    review = pending_review(run)
    out.print(f"flow run {review.flow_run_id} ({review.flow_run_name}), paused since "
              f"{review.paused_since}")
    out.print(plain_description(review.description), markup=False)
    for path in save_previews(review, save) if save is not None else []:
        out.print(f"preview: {path}", markup=False)


@review_app.command("approve")
def approve(run: str = RunArg) -> None:
    """Accept the stage and go on."""
    _answer(run, action="approve")


@review_app.command("regenerate")
def regenerate(run: str = RunArg) -> None:
    """Redo the stage with a new seed."""
    _answer(run, action="regenerate")


@review_app.command("edit")
def edit(run: str = RunArg,
         instruction: str = typer.Argument(..., help="what image-to-image should change")) -> None:
    """Edit the first frame with image-to-image, then review it again."""
    from agents.base import check_text

    _answer(run, action="edit", instruction=check_text("instruction", instruction))


@review_app.command("pick")
def pick(run: str = RunArg,
         candidate: int = typer.Argument(..., help="the candidate to keep (1-based)")) -> None:
    """Training: the judges disagreed; keep this candidate for the dataset."""
    if not 1 <= candidate <= 16:
            raise MoraError(f"candidate numbers start at 1 (at most 16), got {candidate}")
    _answer(run, action="pick", candidate=candidate)


@review_app.command("reject")
def reject(run: str = RunArg) -> None:
    """Training: the judges disagreed and no candidate is good enough; discard the set."""
    _answer(run, action="reject")


@review_app.command("notify")
def notify(webhook: str = typer.Argument(..., help="a Slack-compatible incoming-webhook URL "
                                         "(http:// or https://)"),
           spec: Path = typer.Option(AUTOMATION_FILE, "--file", help="the automation to create")
           ) -> None:
    """Post to WEBHOOK whenever a Mora run waits for a review: saves a Webhook block and
    creates (or replaces) the automation in configs/automations/review-waiting.yaml."""
    import yaml
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook
    from pydantic import ValidationError

    if not webhook.startswith(("http://", "https://")) or any(c.isspace() or ord(c) < 32
                                                                for c in webhook):
        raise MoraError("the webhook must be an http:// or https:// URL without spaces")
    try:
        document = yaml.safe_load(spec.read_text())
        actions = document["actions"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise MoraError(f"cannot read automation file '{spec}': {type(exc).__name__}") from None
    _server_for()
    block_id = Webhook(method="POST", url=webhook,
                       headers={"Content-Type": "application/json"}).save(WEBHOOK_BLOCK,
                                                                          overwrite=True)
    for action in actions:
        if action.get("type") == "call-webhook":
            action["block_document_id"] = str(block_id)
    try:
        automation = Automation.model_validate(document)
    except ValidationError as exc:
        raise MoraError(f"automation file '{spec}': {exc.errors()[0]['msg']}") from None
    try:
        Automation.read(name=automation.name).delete()  # a second `notify` replaces it
    except ValueError:
        pass
    created = automation.create()
    out.print(f"automation '{created.name}' ({created.id}) posts to the webhook when a Mora run "
              "waits for a review", markup=False)


def _ask(kind: str):
    from tasks.review import CandidateDecision, ReviewDecision

    if kind == "pick":
        answer = Prompt.ask("pick a candidate number, or reject", default="reject", console=err)
        if answer.strip().isdigit() and int(answer) >= 1:
            return CandidateDecision(action="pick", candidate=int(answer))
        return CandidateDecision(action="reject")
    action = Prompt.ask("review", choices=["approve", "regenerate", "edit"], default="approve",
                        console=err)
    instruction = Prompt.ask("instruction", console=err) if action == "edit" else ""
    return ReviewDecision(action=action, instruction=instruction)


def run_with_terminal_review(start: Callable[[], Any], tag: str, interactive: bool) -> Any:
    """Run ``start()`` (a flow call tagged ``tag``) in a thread; answer its pauses here."""
    import tempfile


    previews = Path(tempfile.gettempdir()) / "mora-previews"
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = start()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    told: set[tuple[str, str]] = set()
    while thread.is_alive():
        thread.join(0.5)
        for review in pending_reviews(tag=tag) if thread.is_alive() else []:
            marker = (review.flow_run_id, review.description)
            if marker in told:
                continue
            told.add(marker)
            err.print(plain_description(review.description), markup=False)
            for path in save_previews(review, previews):
                err.print(f"preview: {path}", markup=False)
            if not interactive:
                how = "pick <id> N | reject" if review.kind == "pick" else \
                    "approve | regenerate | edit"
                err.print(f"waiting for a reviewer: `mora review {how}` with id "
                          f"{review.flow_run_id}, or the Prefect UI")
                continue
            answer_review(review.flow_run_id, _ask(review.kind))
            time.sleep(0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


# --- The review client: answering a pause from outside the run (`mora review`, scripts) -----

class PendingReview(BaseModel):
    flow_run_id: str
    flow_run_name: str
    kind: Literal["stage", "pick"] = Field(default="stage", description="stage: approve / "
                                           "regenerate / edit; pick: pick a candidate or reject")
    paused_since: str | None = None
    description: str = ""


def pending_reviews(tag: str | None = None, limit: int = 50) -> list[PendingReview]:
    """Flow runs paused for a review (optionally only those tagged ``tag``), newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateName, FlowRunFilterTags)
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])),
                tags=FlowRunFilterTags(all_=[tag]) if tag else None),
            sort=FlowRunSort.START_TIME_DESC, limit=limit)
        reviews = [_pending(client, run) for run in runs if _is_review(run)]
        return [review for review in reviews if review is not None]


def pending_review(flow_run_id: str, wait_s: float = 10.0) -> PendingReview:
    """The review a run waits for; a run that is pausing right now gets ``wait_s`` to finish."""
    import time

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            run = _read_run(client, flow_run_id)
            if not (run.state and run.state.is_paused() and _is_review(run)):
                state = run.state.name if run.state else "unknown"
                raise MoraError(f"flow run {flow_run_id} is not waiting for a review "
                                f"(state: {state})")
            review = _pending(client, run)
            if review is not None:
                return review
            if time.monotonic() > deadline:
                raise MoraError(f"flow run {flow_run_id} is pausing but its review form is not "
                                "saved yet; try again")
            time.sleep(0.2)


def answer_review(flow_run_id: str, decision: ReviewDecision | CandidateDecision) -> None:
    """Resume a paused run with the reviewer's decision (what the UI's Resume form does)."""
    from prefect.exceptions import FlowPauseTimeout, NotPausedError, PrefectHTTPStatusError
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_CLIENT_RETRY_EXTRA_CODES, temporary_settings

    pending_review(flow_run_id)  # a clear error for unknown or running runs
    # On SQLite the server can refuse a resume outright ("database is locked", HTTP 500; README
    # "Its database is SQLite"); the run stays paused, so Prefect's client sends it again.
    retry_codes = {*PREFECT_CLIENT_RETRY_EXTRA_CODES.value(), 500}
    try:
        with temporary_settings({PREFECT_CLIENT_RETRY_EXTRA_CODES: retry_codes}):
            resume_flow_run(_uuid(flow_run_id), run_input=decision.model_dump(mode="json"))
    except (NotPausedError, FlowPauseTimeout, RuntimeError) as exc:
        raise MoraError(f"cannot resume flow run {flow_run_id}: {exc}") from None
    except PrefectHTTPStatusError as exc:
        raise MoraError(f"cannot resume flow run {flow_run_id}: the server answered HTTP "
                        f"{exc.response.status_code} (its log says why); try again") from None


def _is_review(run) -> bool:
    return str(run.state.state_details.pause_key or "").startswith("review-")


def _pending(client, run) -> PendingReview | None:
    """None while the run is still saving its form (the description is written last)."""
    import json

    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.input.run_input import keyset_from_paused_state

    try:
        raw = client.read_flow_run_input(run.id, keyset_from_paused_state(run.state)["description"])
    except ObjectNotFound:
        return None
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise
    description = json.loads(raw)
    kind = "pick" if str(run.state.state_details.pause_key).startswith("review-pick-") else "stage"
    return PendingReview(flow_run_id=str(run.id), flow_run_name=run.name, kind=kind,
                         paused_since=str(run.state.timestamp), description=description)


def _read_run(client, flow_run_id: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_flow_run(_uuid(flow_run_id))
    except ObjectNotFound:
        raise MoraError(f"no flow run {flow_run_id}") from None


def _uuid(flow_run_id: str):
    from uuid import UUID

    try:
        return UUID(str(flow_run_id))
    except ValueError:
        raise MoraError(f"'{flow_run_id}' is not a flow run id") from None


# --- The preview media inside a pause's description, for terminals and `--save` -------------

_DATA_URI = r"data:(image/png|image/gif|video/mp4);base64,([A-Za-z0-9+/=]+)"
_SUFFIXES = {"image/png": ".png", "image/gif": ".gif", "video/mp4": ".mp4"}


def preview_media(description: str) -> list[tuple[str, bytes]]:
    """The inline previews (data: URIs) of a review's description: (file suffix, bytes)."""
    import base64
    import re

    return [(_SUFFIXES[mime], base64.b64decode(data))
            for mime, data in re.findall(_DATA_URI, description)]


def plain_description(description: str) -> str:
    """The description for a terminal: each inline preview as a one-line placeholder."""
    import re

    def placeholder(match: "re.Match[str]") -> str:
        return f"[inline {match.group(1)} preview, {len(match.group(2)) * 3 // 4 // 1000} kB]"

    text = re.sub(r'<video src="' + _DATA_URI + r'"[^>]*></video>', placeholder, description)
    return re.sub(r"!\[[^\]]*\]\(" + _DATA_URI + r"\)", placeholder, text)
