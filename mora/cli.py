"""The `mora` command line (typer): the commands, one module per group (mora/cli_*.py), and
the entry point that turns user errors into one `error:` line. Heavy libraries are imported
inside commands only."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone

import typer

from configs.errors import MoraError
from mora import cli_common, cli_eval, cli_sops, cli_training
from mora.cli_common import console
from mora.cli_cache import cache_app
from mora.cli_models import models_app
from mora.cli_review import review_app
from mora.cli_server import server_app
from mora.local_server import use_running_server

app = typer.Typer(help="Mora: multi-agent video generation as Prefect workflows.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="show the Python "
                                          "traceback of an error too")) -> None:
    cli_common.VERBOSE = verbose
    cli_common.STARTED = datetime.now(timezone.utc)  # what this command makes is newer


# The paper's SOPs (A.3), then training and evaluation; in this order in `mora --help`.
app.command()(cli_sops.t2v)
app.command()(cli_sops.i2v)
app.command()(cli_sops.extend)
app.command()(cli_sops.edit)
app.command("connect")(cli_sops.connect)
app.command("digital-world")(cli_sops.digital_world)
app.command()(cli_training.train)
app.command()(cli_training.ablate)
app.command()(cli_training.worker)
app.command("eval")(cli_eval.eval_cmd)
app.add_typer(models_app, name="models")
app.add_typer(review_app, name="review")
app.add_typer(server_app, name="server")
app.add_typer(cache_app, name="cache")


def _click_exceptions():
    try:  # typer >= 0.26 vendors click
        from typer._click import exceptions
    except ImportError:  # older typer runs on click itself
        from click import exceptions
    return exceptions


def main() -> None:
    """Console entry point: user errors become one `error:` line and exit code 2."""
    # The temporary Prefect server of a local run would otherwise start a telemetry service
    # that, on a machine without network, fails with a traceback (set it to true to keep it).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Its first start creates the database; 20 s (Prefect's default) is short on a busy 2-core box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    click = _click_exceptions()
    try:
        use_running_server()  # `mora server start`'s, unless PREFECT_API_URL names another
        code = app(standalone_mode=False)  # a `typer.Exit(n)` comes back as n
        if isinstance(code, int) and code:
            sys.exit(code)
    except MoraError as exc:
        _fail(str(exc), 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


def _fail(message: str, code: int) -> None:
    if cli_common.VERBOSE and sys.exc_info()[0] is not None:
        import traceback

        traceback.print_exc()
    console.print(f"error: {' '.join(message.split())}", markup=False, highlight=False,
                  soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
