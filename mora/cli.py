"""The `mora` command line (typer). Heavy libraries are imported inside commands only."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mora.cli_review import review_app, run_with_terminal_review
from mora.errors import MoraError
from mora.settings import default_profile

app = typer.Typer(help="Mora: multi-agent video generation as Prefect workflows.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="The offline tiny model zoo and the models profiles name.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(review_app, name="review")

console = Console(stderr=True)
out = Console(soft_wrap=True)

ProfileOpt = typer.Option(None, "--profile", help="profile name or YAML path [default: tiny]")
StoreOpt = typer.Option(None, "--store", help="local folder or s3://bucket/prefix "
                        "[default: $MORA_STORE or ./mora-store]")
SeedOpt = typer.Option(0, "--seed", help="random seed (recorded in provenance)")


def _checked_out_path(path: Optional[Path]) -> Optional[Path]:
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


def _common(profile: Optional[str], store: Optional[str], seed: int):
    """Validate the options every command takes; returns (profile name, store url)."""
    from agents.base import check_seed
    from configs import load_profile
    from storage import open_store

    check_seed(seed)
    prof = load_profile(profile or default_profile())
    return profile or default_profile(), open_store(store).url, prof


@app.command()
def t2v(
    prompt: str = typer.Argument(..., help="what the video shows"),
    segments: int = typer.Option(1, "--segments", help="clips chained from each last frame"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="also copy the mp4 here"),
    profile: Optional[str] = ProfileOpt,
    store: Optional[str] = StoreOpt,
    seed: int = SeedOpt,
    review: str = typer.Option("auto", "--review", help="auto: never pause; ask: pause after "
                               "each stage and ask here (or answer with `mora review`)"),
) -> None:
    """Text-to-video: enhance → first frame → image-to-video, SEGMENTS times."""
    from agents.base import check_text

    check_text("prompt", prompt)
    if segments < 1 or segments > 32:
        raise MoraError(f"--segments must be between 1 and 32, got {segments}")
    out_path = _checked_out_path(out_file)
    profile_name, store_url, _ = _common(profile, store, seed)

    policy = _review_policy(review)
    from flows.text_to_video import text_to_video

    result = _run_flow(lambda: text_to_video(prompt=prompt, segments=segments,
                                             profile=profile_name, store=store_url, seed=seed,
                                             review=policy),
                       f"text-to-video on profile '{profile_name}' ({segments} segment(s))", policy)
    _report_video(result.store, result.video.mp4_key, out_path,
                  f"{result.video.num_frames} frames, {result.video.width}x"
                  f"{result.video.height} @ {result.video.fps:g} fps")


def _review_policy(mode: str):
    from tasks.review import ReviewPolicy

    if mode not in ("auto", "ask"):
        raise MoraError(f"--review must be auto or ask, got '{mode}'")
    return ReviewPolicy(mode=mode, poll_interval_s=1)


def _run_flow(start, what: str, policy):
    """Run a flow call; with review=ask, answer its pauses on this terminal."""
    if policy.mode == "auto":
        with console.status(f"{what}…"):
            return start()
    import uuid

    import prefect

    tag = f"mora-cli-{uuid.uuid4().hex[:12]}"

    def tagged():
        with prefect.tags(tag):
            return start()

    return run_with_terminal_review(tagged, tag, interactive=sys.stdin.isatty())


def _report_video(store_url: str, key: str, out_path: Optional[Path], summary: str) -> None:
    from storage import open_store

    store = open_store(store_url)
    if out_path is not None:
        store.download(key, out_path)
        out.print(f"video: {out_path}  ({summary})")
    else:
        out.print(f"video: {store.uri(key)}  ({summary})")
    out.print(f"store key: {key}  in {store_url}")


@models_app.command("build-tiny")
def build_tiny(force: bool = typer.Option(False, "--force", help="rebuild even if present")) -> None:
    """Build the offline tiny models under $MORA_HOME/tiny (idempotent)."""
    from agents.tiny import TINY_MODELS, ensure_tiny_model, tiny_model_dir
    from mora.settings import mora_home

    with console.status("building tiny models…"):
        if force:
            from agents.tiny import build_tiny_zoo

            build_tiny_zoo(force=True)
        for name in TINY_MODELS:
            ensure_tiny_model(name)
            out.print(f"tiny:{name}  {tiny_model_dir(name)}")
    out.print(f"tiny models ready in {mora_home() / 'tiny'}")


@models_app.command("list")
def list_models() -> None:
    """Every profile's models and whether their weights are on this machine."""
    from rich.table import Table

    from configs import list_profiles, load_profile
    from mora.model_status import weights_status

    table = Table("profile", "agent", "pipeline", "model", "local")
    for name in list_profiles():
        prof = load_profile(name)
        for role in ("text_to_image", "image_to_image", "image_to_video", "connector"):
            spec = getattr(prof, role)
            table.add_row(name, role, spec.pipeline, spec.model, weights_status(spec.model))
    out.print(table)


def _click_exceptions():
    try:  # typer >= 0.26 vendors click
        from typer._click import exceptions
    except ImportError:  # older typer runs on click itself
        from click import exceptions
    return exceptions


def main() -> None:
    """Console entry point: user errors become one `error:` line and exit code 2."""
    click = _click_exceptions()
    try:
        app(standalone_mode=False)
    except MoraError as exc:
        _fail(str(exc), 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        _fail("aborted", 130)
    except click.Exit as exc:
        sys.exit(exc.exit_code)


def _fail(message: str, code: int) -> None:
    console.print(f"error: {' '.join(message.split())}", markup=False, highlight=False)
    sys.exit(code)


if __name__ == "__main__":
    main()
