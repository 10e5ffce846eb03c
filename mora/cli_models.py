"""`mora models …`: the offline tiny model zoo, real-size models with random weights, and which
models the profiles name (and which fine-tuned checkpoints a store holds)."""

from __future__ import annotations

from typing import Optional

import typer

from mora.cli_common import check_mora_home, console, out

models_app = typer.Typer(help="The offline tiny model zoo and the models profiles name.",
                         no_args_is_help=True)


@models_app.command("build-tiny")
def build_tiny(force: bool = typer.Option(False, "--force", help="rebuild even if present")) -> None:
    """Build the offline tiny models under $MORA_HOME/tiny (idempotent)."""
    from agents.tiny import TINY_MODELS, ensure_tiny_model, tiny_model_dir
    from configs.settings import mora_home

    check_mora_home()
    with console.status("building tiny models…"):
        if force:
            from agents.tiny import build_tiny_zoo

            build_tiny_zoo(force=True)
        for name in TINY_MODELS:
            ensure_tiny_model(name)
            out.print(f"tiny:{name}  {tiny_model_dir(name)}")
    out.print(f"tiny models ready in {mora_home() / 'tiny'}")


@models_app.command("build-random")
def build_random(
    profile: str = typer.Argument(..., help="a GPU profile, e.g. sd3-svd"),
    dtype: Optional[str] = typer.Option(None, help="weights dtype (default: the profile's)"),
    max_gb: float = typer.Option(12.0, "--max-gb", help="skip models whose weights need more"),
    force: bool = typer.Option(False, "--force", help="rebuild even if present"),
) -> None:
    """Build PROFILE's models at their published architectures with random weights (offline)."""
    from agents.random_weights import build_random_profile

    check_mora_home()
    shown = lambda r: out.print(f"{r.model}  {r.folder or '-'}  {r.reason}",  # noqa: E731
                                markup=False, highlight=False, soft_wrap=True)
    with console.status(f"building {profile} at real size with random weights…"):
        path, _ = build_random_profile(profile, dtype, max_gb, force=force, on_model=shown)
    out.print(f"random weights (outputs are noise): --profile {path}", markup=False,
              highlight=False, soft_wrap=True)


@models_app.command("list")
def list_models(store: Optional[str] = typer.Option(None, "--store", help="also list the "
                                                    "trained checkpoints in this store "
                                                    "[default: $MORA_STORE or ./mora-store, "
                                                    "if it exists]")) -> None:
    """Every profile's models and whether their weights are on this machine; the fine-tuned
    checkpoints of the store (usable as --weights)."""
    from rich.table import Table

    from storage import open_store

    opened = open_store(store)  # a bad store URL fails before anything is printed

    from configs import list_profiles, load_profile
    from mora.model_status import weights_status

    table = Table("profile", "agent", "pipeline", "model", "local")
    for name in list_profiles():
        prof = load_profile(name)
        for role in ("text_to_image", "image_to_image", "image_to_video", "connector"):
            spec = getattr(prof, role)
            table.add_row(name, role, spec.pipeline, spec.model, weights_status(spec.model))
    out.print(table)
    _list_checkpoints(opened, explicit=store is not None)


def _list_checkpoints(opened, explicit: bool) -> None:
    from rich.table import Table

    from tasks.weights import list_checkpoints

    if not explicit and not opened.list("checkpoints/"):
        return  # the default store: nothing trained there (or no store at all)
    table = Table("weights", "round", "agent", "model", "step", "loss", "held-out",
                  title=f"trained checkpoints in {opened.url}")
    for c in list_checkpoints(opened.url):
        table.add_row(f"store://{c.key}", f"round:{c.round_id}" if c.round_id else "-",
                      c.target, c.model, "-" if c.step is None else str(c.step),
                      "-" if c.loss is None else f"{c.loss:.4f}",
                      "-" if c.held_out is None else f"{c.held_out:.4f}")
    out.print(table)
