"""What every `mora` command shares: its consoles and options, the checks it makes before any
work, and running a flow (with its pauses answered on this terminal when asked).

Options that are flow parameters are checked through the flows' own types (flows/params.py),
so the CLI admits exactly what the flows do; only their wording is the CLI's."""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from configs.errors import MoraError
from configs.settings import default_profile
from mora.cli_review import run_with_terminal_review

console = Console(stderr=True)
STARTED = datetime.now(timezone.utc)  # when this command started (mora/cli.py sets it)
out = Console(soft_wrap=True)

ProfileOpt = typer.Option(None, "--profile", help="profile name or YAML path [default: tiny]")
StoreOpt = typer.Option(None, "--store", help="local folder or s3://bucket/prefix "
                        "[default: $MORA_STORE or ./mora-store]")
SeedOpt = typer.Option(0, "--seed", help="random seed (recorded in provenance)")
WeightsOpt = typer.Option(None, "--weights", help="fine-tuned weights from the store: "
                          "round:<name>-rK, store://KEY or latest; base: the profile's base "
                          "weights [default: as the profile says]")
RefreshOpt = typer.Option(False, "--refresh", help="make every stage anew and replace what the "
                          "cache holds for it (a change of code, weights or store is noticed "
                          "without it)")
SOURCE_HELP = "a file, store://KEY for an artifact in the store, or s3://BUCKET/KEY"


# ---- options checked as the flows' parameters ------------------------------------------------


def checked(kind: Any, value: Any, option: str) -> Any:
    """``value`` validated as the flow parameter type ``kind`` (flows/params.py); its first
    problem becomes one MoraError line naming ``option``."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise MoraError(f"{option} {_problem(kind, value, exc.errors()[0])}") from None


def _problem(kind: Any, value: Any, error: dict) -> str:
    """Pydantic's complaint in the CLI's words."""
    reason = str(error.get("ctx", {}).get("error", ""))
    if error["type"] == "string_too_short" or reason == "is blank":
        return "is empty"
    if error["type"] == "string_too_long":
        return f"is {len(value)} characters long (at most {error['ctx']['max_length']})"
    if error["type"] == "value_error":
        return reason
    return f"must be {_must(kind)}, got {value!r}"


def _must(kind: Any) -> str:
    """What a valid value of ``kind`` is, in words: its ``Must``, its choices or its bounds."""
    from typing import Literal, get_args, get_origin

    from flows.params import Must

    if get_origin(kind) is Literal:
        return "one of " + " ".join(get_args(kind))
    limits = [m for arg in get_args(kind)[1:] for m in getattr(arg, "metadata", [arg])]
    for limit in limits:
        if isinstance(limit, Must):
            return limit.text
    low = next(getattr(m, "ge") for m in limits if hasattr(m, "ge"))
    high = next((getattr(m, "le") for m in limits if hasattr(m, "le")), None)
    return f"at least {low}" if high is None else f"between {low} and {high}"


def checked_out_path(path: Optional[Path]) -> Optional[Path]:
    """--out must be an .mp4 in an existing, writable folder; checked before any work."""
    if path is None:
        return None
    if path.suffix.lower() != ".mp4":
        raise MoraError(f"--out must end in .mp4: {path}")
    folder = path.expanduser().resolve().parent
    if not folder.is_dir():
        raise MoraError(f"--out folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise MoraError(f"--out folder is not writable: {folder}")
    if path.is_dir():
        raise MoraError(f"--out is a folder: {path}")
    return path


def check_common(profile: Optional[str], store: Optional[str], seed: int, models: bool = True,
                 weights: Optional[str] = None):
    """Validate the options every command takes; returns (profile name, store url, profile).

    Before any work: the profile's weights must be loadable (offline: in the HF cache; local
    folders: safetensors), the store reachable and writable, and the fine-tuned weights the
    profile or ``--weights`` names in the store and trained on the profile's model."""
    from configs import load_profile
    from flows.params import Seed

    checked(Seed, seed, "seed")
    prof = load_profile(profile or default_profile())
    if models:
        check_models(prof, ("text_to_image", "image_to_image", "image_to_video", "connector"))
    store_url = checked_store(store)
    if models or weights is not None:
        from tasks.weights import apply_weights

        prof = apply_weights(prof, store_url, weights)[0]
    return profile or default_profile(), store_url, prof


def check_prompt_fits(prof, prompt: str) -> None:
    """A profile whose enhancer accepts only some prompts (``backend: world``: the shapes
    world's grammar) refuses the others here, before a flow starts."""
    if prof.prompt.backend == "world":
        from agents.prompt import WorldEnhancer

        WorldEnhancer().enhance(prompt)


def check_models(prof, roles: tuple[str, ...]) -> None:
    """The agents' weights are loadable (offline: in the HF cache; local folders: safetensors)."""
    from agents.loading import check_weights_present

    for role in roles:
        check_weights_present(getattr(prof, role))
    if any(getattr(prof, role).model.startswith("tiny:") for role in roles):
        check_mora_home()  # tiny models are built there on first use
    from agents.random_weights import is_random

    if any(is_random(getattr(prof, role).model) for role in roles):
        console.print(f"note: profile {prof.name} runs on random weights: outputs are noise",
                      markup=False, highlight=False)


def checked_store(url: Optional[str]) -> str:
    """The store's URL once it is known to take writes: S3 (bucket and credentials, one HEAD
    request) or a local folder that exists or can be made. Nothing is created here."""
    from storage import open_store

    store = open_store(url)
    if hasattr(store, "check"):
        store.check()
        return store.url
    _check_writable_folder(Path(store.url), f"store {store.url}")
    return store.url


def _check_writable_folder(path: Path, what: str) -> None:
    """``path`` is a writable folder, or could be made as one (nothing is created here)."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise MoraError(f"{what} cannot be written ({folder} is not a writable folder)")


def check_mora_home() -> None:
    from configs.settings import mora_home

    _check_writable_folder(mora_home() / "tiny", f"MORA_HOME {mora_home()}")


def review_policy(mode: str):
    from tasks.review import ReviewPolicy

    if mode not in ("auto", "ask"):
        raise MoraError(f"--review must be auto or ask, got '{mode}'")
    return ReviewPolicy(mode=mode, poll_interval_s=1)


# ---- running a flow --------------------------------------------------------------------------


def local_run(start):
    """``start`` (a flow call), without flow heartbeats when no Prefect server is configured.

    Heartbeats let a long-lived server notice crashed runs; the temporary server of a local run
    dies with this process, and the heartbeat thread costs up to a second at every flow's end
    (Prefect joins it while it sleeps in 1 s steps). Call this in the main thread: it starts
    that temporary server, which ends when the thread that started it ends (the flow itself may
    run in another thread, see mora/cli_review.py)."""
    from configs.settings import cache_enabled

    cache_enabled()  # a bad MORA_CACHE fails here, once, not in every task
    one_line_errors()
    if os.environ.get("PREFECT_API_URL"):
        return start
    from mora.local_server import start_temporary_server

    start_temporary_server()  # dies with this process, however it dies

    def run():
        from prefect.settings import temporary_settings

        with temporary_settings(local_run_settings()):
            return start()

    return run


VERBOSE = False  # `mora --verbose`: tracebacks on the console too


class _OneLine(logging.Filter):
    """A console log record of a ``MoraError`` (a user's error, or the store or a model saying
    no) keeps its message and loses its traceback; other exceptions (bugs) keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MoraError):
            record.exc_info = record.exc_text = None
        return True


def one_line_errors() -> None:
    """Prefect's console handler shows a failed run's ``MoraError`` as one line. Its API handler
    runs first (it is on the run loggers; the console one is on the root), so the run's logs in
    the dashboard keep the traceback. Not with ``mora --verbose``."""
    import prefect.main  # noqa: F401  (configures Prefect's logging: the handlers exist now)
    from prefect.logging.handlers import PrefectConsoleHandler

    if VERBOSE:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _OneLine) for f in handler.filters):
            handler.addFilter(_OneLine())


def local_run_settings() -> dict:
    """The client settings of a flow run against the temporary server (benchmarks/
    bench_t2v_overhead.py times flows with these too): no flow heartbeats (see ``local_run``),
    and no CSRF token request when the server does not check CSRF tokens (Prefect's default),
    where each flow run's new client would spend a round trip on a 422."""
    from prefect.settings import (PREFECT_CLIENT_CSRF_SUPPORT_ENABLED,
                                  PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
                                  PREFECT_SERVER_CSRF_PROTECTION_ENABLED)

    settings = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if not PREFECT_SERVER_CSRF_PROTECTION_ENABLED.value():
        settings[PREFECT_CLIENT_CSRF_SUPPORT_ENABLED] = False
    return settings


def run_flow(start, what: str, policy):
    """Run a flow call; with review=ask, answer its pauses on this terminal."""
    start = local_run(start)
    if policy.mode == "auto":
        from mora.cli_progress import step_bars

        with step_bars(console, what):
            return start()
    import uuid

    import prefect

    tag = f"mora-cli-{uuid.uuid4().hex[:12]}"

    def tagged():
        with prefect.tags("mora", tag):  # "mora": what the review-waiting automation matches
            return start()

    return run_with_terminal_review(tagged, tag, interactive=sys.stdin.isatty())


def report_video(store_url: str, key: str, out_path: Optional[Path], summary: str) -> None:
    from storage import open_store

    store = open_store(store_url)
    if out_path is not None:
        store.download(key, out_path)
        out.print(f"video: {out_path}  ({summary})")
    else:
        out.print(f"video: {store.uri(key)}  ({summary})")
    out.print(f"store key: {key}  in {store_url}")
    made = store.read_provenance(key)
    if made.created_at < STARTED:
        out.print(f"reused from the cache: made by flow run {made.flow_run_id} at "
                  f"{made.created_at:%Y-%m-%d %H:%M:%S} UTC (--refresh makes it anew)")
