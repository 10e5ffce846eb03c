"""Human review between stages (paper A.4): the policy, the reviewer's answer, and the pause.

``ReviewPolicy`` is a flow parameter (a form in the Prefect UI); ``ReviewDecision`` is the
typed run input a paused run waits for, answerable from the UI's Resume form, ``mora review``
(the review client in mora/cli_review.py) or the API. ``auto_review`` and ``human_review`` have one signature and one return type, so a
flow picks either without caring which.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect.input import RunInput

from configs.errors import MoraError

ReviewMode = Literal["auto", "ask"]


class ReviewPolicy(BaseModel):
    """How a flow reviews each stage."""

    mode: ReviewMode = Field(default="auto", description="auto: never pause; ask: pause after "
                             "each stage for a reviewer")
    max_tries: int = Field(default=3, ge=1, le=10, description="generations per stage, the "
                           "first one included")
    timeout_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600,
                           description="how long a pause waits for an answer")
    on_timeout: Literal["approve", "fail"] = Field(default="fail", description="what an "
                                                   "unanswered pause does")
    poll_interval_s: int = Field(default=2, ge=1, le=60)


def _required_when(action: str, field: str, schema: dict) -> ConfigDict:
    """Put a pydantic validator's rule in the JSON schema too: the server validates a resume
    against the schema (the UI form included), so a bad answer keeps the run paused instead of
    crashing it when the flow loads the input."""
    return ConfigDict(extra="forbid", json_schema_extra={
        "if": {"properties": {"action": {"const": action}}, "required": ["action"]},
        "then": {"required": [field], "properties": {field: schema}}})


class ReviewDecision(RunInput):
    """A reviewer's answer to a paused stage.

    ``instruction`` is a plain string defaulting to empty (an optional ``str | None`` would show
    the UI's type toggle); the schema's if/then makes it required, and not blank, for edit."""

    model_config = _required_when("edit", "instruction", {"type": "string", "pattern": "\\S"})

    action: Literal["approve", "regenerate", "edit"] = Field(
        default="approve", description="approve: go on; regenerate: a new seed; edit: "
        "image-to-image with the instruction (first-frame stage)")
    instruction: str = Field(default="", max_length=2000,
                             description="what to change; needed for edit only")

    @model_validator(mode="after")
    def _edit_needs_instruction(self) -> "ReviewDecision":
        if self.action == "edit" and not self.instruction.strip():
            raise ValueError("edit needs an instruction")
        return self


class CandidateDecision(RunInput):
    """A reviewer's answer when the two judges disagree on a candidate set (paper A.6).

    No default action: the reviewer chooses pick or reject. A pause asks with
    ``for_set(C)``, whose candidate number is bounded to 1..C in the form's schema."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["pick", "reject"] = Field(description="pick: keep one candidate for "
                                              "training; reject: discard the set")
    candidate: int = Field(default=1, ge=1, le=16, description="the candidate to keep, "
                           "numbered as in the preview (ignored for reject)")

    @classmethod
    def for_set(cls, candidates: int) -> type["CandidateDecision"]:
        from pydantic import create_model

        return create_model(cls.__name__, __base__=cls, candidate=(int, Field(
            default=1, ge=1, le=candidates, description=f"the candidate to keep, 1 to "
            f"{candidates} as numbered in the preview (ignored for reject)")))


class ReviewTimedOut(MoraError):
    pass


def auto_review(stage: str, attempt: int, preview_markdown: str,
                policy: ReviewPolicy) -> ReviewDecision:
    return ReviewDecision(action="approve")


def human_review(stage: str, attempt: int, preview_markdown: str,
                 policy: ReviewPolicy) -> ReviewDecision:
    """Pause the flow run until a reviewer answers, or apply the timeout policy."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    _announce(stage, f"try {attempt} of {policy.max_tries}")
    try:
        return pause_flow_run(
            wait_for_input=ReviewDecision.with_initial_data(
                description=f"### Review: {stage} (try {attempt} of "
                            f"{policy.max_tries})\n\n{preview_markdown}"),
            timeout=policy.timeout_s,
            poll_interval=policy.poll_interval_s,
            key=f"review-{stage}-{attempt}",  # a reused key would skip the pause
        )
    except FlowPauseTimeout:
        if policy.on_timeout == "fail":
            raise ReviewTimedOut(f"review of {stage} got no answer within {policy.timeout_s} s "
                                 "(on_timeout=fail)") from None
        _resume_self()
        return ReviewDecision(action="approve")


def human_pick(stage: str, preview_markdown: str, policy: ReviewPolicy,
               candidates: int) -> CandidateDecision | None:
    """Pause for a reviewer to pick a candidate or reject the set; None when the pause timed out
    and the policy approves (the caller then applies its unattended rule)."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    while True:
        _announce(stage, f"pick 1-{candidates} or reject")
        try:
            decision = pause_flow_run(
                wait_for_input=CandidateDecision.for_set(candidates).with_initial_data(
                    description=f"### Review: {stage} (pick 1-{candidates} or reject)\n\n"
                                f"{preview_markdown}"),
                timeout=policy.timeout_s, poll_interval=policy.poll_interval_s,
                key=f"review-{stage}")
        except FlowPauseTimeout:
            if policy.on_timeout == "fail":
                raise ReviewTimedOut(f"review of {stage} got no answer within "
                                     f"{policy.timeout_s} s (on_timeout=fail)") from None
            _resume_self()
            return None
        if decision.action == "reject" or decision.candidate <= candidates:
            return decision
        stage = f"{stage}-again"  # an out-of-range pick: ask once more, under a new pause key


REVIEW_EVENT = "mora.review.waiting"


def _announce(stage: str, detail: str) -> None:
    """An event as the run pauses, naming the stage: Prefect's own Paused event carries no
    pause key, and configs/automations/review-waiting.yaml tells a webhook from this one."""
    from prefect.context import FlowRunContext
    from prefect.events import emit_event
    from prefect.events.related import tags_as_related_resources

    run = FlowRunContext.get().flow_run
    emit_event(REVIEW_EVENT, resource={"prefect.resource.id": f"prefect.flow-run.{run.id}",
                                       "prefect.resource.name": run.name},
               related=tags_as_related_resources(set(run.tags)),
               payload={"stage": stage, "detail": detail})


def _resume_self() -> None:
    """An unanswered pause that the policy approves: put this run back to Running."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.states import Running

    run_id = FlowRunContext.get().flow_run.id
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Running(message="review timed out: approved by policy"),
                                  force=True)


def reviewer(policy: ReviewPolicy):
    return human_review if policy.mode == "ask" else auto_review
