"""Human review between stages (paper A.4): the policy, the reviewer's answer, and the pause.

``ReviewPolicy`` is a flow parameter (a form in the Prefect UI); ``ReviewDecision`` is the
typed run input a paused run waits for, answerable from the UI's Resume form, ``mora review``
or the API. ``auto_review`` and ``human_review`` have one signature and one return type, so a
flow picks either without caring which.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from prefect.input import RunInput

ReviewMode = Literal["auto", "ask"]


class ReviewPolicy(BaseModel):
    """How a flow reviews each stage."""

    mode: ReviewMode = Field(default="auto", description="auto: never pause; ask: pause after "
                             "each stage for a reviewer")
    max_tries: int = Field(default=3, ge=1, le=10, description="generations per stage, the "
                           "first one included")
    timeout_s: int = Field(default=3600, ge=5, le=7 * 24 * 3600,
                           description="how long a pause waits for an answer")
    on_timeout: Literal["approve", "fail"] = Field(default="fail", description="what an "
                                                   "unanswered pause does")
    poll_interval_s: int = Field(default=2, ge=1, le=60)


class ReviewDecision(RunInput):
    """A reviewer's answer to a paused stage."""

    action: Literal["approve", "regenerate", "edit"] = Field(
        default="approve", description="approve: go on; regenerate: a new seed; edit: "
        "image-to-image with the instruction (first-frame stage)")
    instruction: str | None = Field(default=None, max_length=2000,
                                    description="what to change, for edit")

    @model_validator(mode="after")
    def _edit_needs_instruction(self) -> "ReviewDecision":
        if self.action == "edit" and not (self.instruction and self.instruction.strip()):
            raise ValueError("edit needs an instruction")
        return self


class ReviewTimedOut(Exception):
    pass


def auto_review(stage: str, attempt: int, preview_markdown: str,
                policy: ReviewPolicy) -> ReviewDecision:
    return ReviewDecision(action="approve")


def human_review(stage: str, attempt: int, preview_markdown: str,
                 policy: ReviewPolicy) -> ReviewDecision:
    """Pause the flow run until a reviewer answers, or apply the timeout policy."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

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
        if policy.on_timeout == "approve":
            return ReviewDecision(action="approve")
        raise ReviewTimedOut(f"review of {stage} got no answer within {policy.timeout_s} s") from None


def reviewer(policy: ReviewPolicy):
    return human_review if policy.mode == "ask" else auto_review
