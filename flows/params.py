"""The flows' parameters as types: one definition each, with its limits, read by every flow's
signature (Prefect validates a run's parameters with pydantic before it starts, whether it is
called from Python, a deployment or the CLI) and by the CLI, which checks its options through
the same types before any work (mora/cli_common.py) without importing Prefect.

They live beside the flows, not in configs/: a store URL's grammar is storage's
(storage/factory.py) and configs/ imports nothing above itself. Validators raise ValueError so
pydantic reports them as validation errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from configs import load_profile
from configs.ablations import VARIANT_NAME_CHARS
from configs.errors import MoraError
from configs.schema import WEIGHTS_REF_PATTERN
from storage.factory import parse_store_url


@dataclass(frozen=True)
class Must:
    """A valid value in words, for messages outside pydantic's own wording (the CLI's
    ``error: --name must be …``). Pydantic and Prefect ignore it."""

    text: str


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("is blank")
    if any(ord(c) < 32 and c not in "\t\n" or ord(c) == 0x7F for c in value):
        raise ValueError("contains control characters")
    return value


def _source(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 0x7F for c in value):
        raise ValueError("contains control characters")
    return value


def _checked_by(check):
    """A validator that keeps the value if ``check(value)`` passes, its MoraError otherwise."""
    def validate(value: str) -> str:
        try:
            check(value)
        except MoraError as exc:
            raise ValueError(str(exc)) from None
        return value

    return validate


def _name(chars: int, description: str):
    """Lowercase letters, digits, '-' or '_', at most ``chars``: names that become store keys."""
    return Annotated[str, Field(pattern=rf"^[a-z0-9][a-z0-9_-]{{0,{chars - 1}}}$",
                                description=description),
                     Must(f"lowercase letters, digits, '-' or '_' (at most {chars})")]


# ---- what the SOP flows take -----------------------------------------------------------------

Source = Annotated[str, Field(min_length=1, max_length=4096, description="a local file path, "
                              "store://<key> for an artifact already in the store, or "
                              "s3://bucket/key for an object the store's credentials read"),
                   AfterValidator(_source)]
Prompt = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_text)]
Seed = Annotated[int, Field(ge=0, lt=2**63), Must("an integer in [0, 2**63)")]
Segments = Annotated[int, Field(ge=1, le=32, description="clips, each from the previous clip's "
                                "last frame")]
ProfileRef = Annotated[str, Field(min_length=1, max_length=4096, description="a profile name "
                                  "(configs/profiles) or a YAML path"),
                       AfterValidator(_checked_by(load_profile))]
StoreUrl = Annotated[str, Field(max_length=4096, description="a folder, file:///path or "
                                "s3://bucket/prefix"), AfterValidator(_checked_by(parse_store_url))]
WeightsRef = Annotated[str, Field(max_length=1000, pattern=WEIGHTS_REF_PATTERN,
                                  description="fine-tuned weights to sample with: "
                                  "round:<round id>, store://<key> or latest (of the store); "
                                  "base: the profile's base weights")]

# ---- what evaluation takes -------------------------------------------------------------------

MAX_VIDEOS = 1000  # videos one evaluation run takes
Videos = Annotated[list[Source], Field(min_length=1, max_length=MAX_VIDEOS)]
EvalTask = Literal["t2v", "i2v", "extend", "edit", "connect", "digital-world"]
HeldOutSeeds = Annotated[int, Field(ge=1, le=32, description="seeds per held-out prompt "
                                    "[default: the config's]")]

# ---- what training takes ---------------------------------------------------------------------

ROUND_ID_CHARS = 40
# `train` names its rounds <name>-r1 … <name>-r100 (at most 100 rounds: Rounds), and the
# ablations name each variant's run <name>-<variant> (configs/ablations.py): each name leaves
# room for what is appended to it.
RUN_NAME_CHARS = ROUND_ID_CHARS - len("-r100")
ABLATION_NAME_CHARS = RUN_NAME_CHARS - len("-") - VARIANT_NAME_CHARS

RoundId = _name(ROUND_ID_CHARS, "names the round in the store; rerun with the same id to "
                "resume it")
RunName = _name(RUN_NAME_CHARS, "names the rounds (<name>-r1, …); rerun with the same name to "
                "resume")
AblationName = _name(ABLATION_NAME_CHARS, "names the variants' rounds (<name>-<variant>-r1, …); "
                     "rerun with the same name to resume")
Rounds = Annotated[int, Field(ge=1, le=100)]
# At most: the training config's own bound (configs/training.py), checked with its overrides.
PromptCount = Annotated[int, Field(ge=1, description="override the config's P")]
Candidates = Annotated[int, Field(ge=2, le=16, description="override the config's C")]

Refresh = Annotated[bool, Field(description="make every stage anew, replacing what the cache "
                                "holds for it (changed code, weights and a wiped store are "
                                "noticed without it)")]

