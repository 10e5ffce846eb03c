"""`mora review …`: answer paused runs through the Prefect API, and the terminal reviewer that
`mora t2v --review ask` uses to answer its own run's pauses on stdin."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.prompt import Prompt

review_app = typer.Typer(help="Answer flow runs paused for a human review (paper A.4).",
                         no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True)

RunArg = typer.Argument(..., help="flow run id (see `mora review list`)")


def _server_for(run: str | None = None) -> None:
    """A run id must parse, and a server must be configured: a temporary server (what Prefect
    starts without PREFECT_API_URL) knows no other process's runs."""
    from prefect.settings import PREFECT_API_URL

    from mora.errors import MoraError
    from tasks.review import _uuid

    if run is not None:
        _uuid(run)
    if not PREFECT_API_URL.value():
        raise MoraError("`mora review` needs the Prefect server the run uses: set PREFECT_API_URL "
                        "(e.g. http://127.0.0.1:4200/api after `prefect server start`)")


def _answer(run: str, **decision: Any) -> None:
    from tasks.review import CandidateDecision, ReviewDecision, answer_review

    _server_for(run)
    kind = CandidateDecision if decision["action"] in ("pick", "reject") else ReviewDecision
    answer_review(run, kind(**decision))
    out.print(f"{decision['action']}: flow run {run} resumed")


@review_app.command("list")
def list_reviews() -> None:
    """Runs waiting for a review, newest first."""
    from tasks.review import pending_reviews

    _server_for()
    reviews = pending_reviews()
    if not reviews:
        out.print("no flow run is waiting for a review")
    for review in reviews:
        title = review.description.splitlines()[0].lstrip("# ") if review.description else ""
        out.print(f"{review.flow_run_id}  {review.flow_run_name}  {title}")


@review_app.command("show")
def show(run: str = RunArg) -> None:
    """What a paused run asks about: the stage, the try, the preview."""
    from tasks.review import pending_review

    _server_for(run)
    review = pending_review(run)
    out.print(f"flow run {review.flow_run_id} ({review.flow_run_name}), paused since "
              f"{review.paused_since}")
    out.print(review.description, markup=False)


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
        from mora.errors import MoraError

        raise MoraError(f"candidate numbers start at 1 (at most 16), got {candidate}")
    _answer(run, action="pick", candidate=candidate)


@review_app.command("reject")
def reject(run: str = RunArg) -> None:
    """Training: the judges disagreed and no candidate is good enough; discard the set."""
    _answer(run, action="reject")


def _ask(kind: str):
    from tasks.review import CandidateDecision, ReviewDecision

    if kind == "pick":
        answer = Prompt.ask("pick a candidate number, or reject", default="reject", console=err)
        if answer.strip().isdigit() and int(answer) >= 1:
            return CandidateDecision(action="pick", candidate=int(answer))
        return CandidateDecision(action="reject")
    action = Prompt.ask("review", choices=["approve", "regenerate", "edit"], default="approve",
                        console=err)
    instruction = Prompt.ask("instruction", console=err) if action == "edit" else None
    return ReviewDecision(action=action, instruction=instruction)


def run_with_terminal_review(start: Callable[[], Any], tag: str, interactive: bool) -> Any:
    """Run ``start()`` (a flow call tagged ``tag``) in a thread; answer its pauses here."""
    from tasks.review import answer_review, pending_reviews

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
            err.print(review.description, markup=False)
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
