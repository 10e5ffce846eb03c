"""`mora cache ls | clear`: the cache records of the tasks (tasks/cache.py), in Prefect's local
result storage. Clearing never touches the store: the next run makes what it needs anew."""

from __future__ import annotations

import re
from typing import Optional

import typer

from configs.errors import MoraError
from mora.cli_common import out

cache_app = typer.Typer(help="The task cache: what a rerun reuses (see README, \"The cache\").",
                        no_args_is_help=True)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AGE_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_age(text: str) -> float:
    """``30m``, ``12h``, ``7d`` … as seconds; a one-line MoraError otherwise."""
    match = _AGE_RE.fullmatch(text.strip())
    if not match:
        raise MoraError(f"--older-than must be a number and a unit (s, m, h or d), e.g. 7d; "
                        f"got '{text}'")
    return float(match.group(1)) * _UNITS[match.group(2)]


@cache_app.command("ls")
def ls() -> None:
    """List the cache records: when written, size, and the store keys each points at."""
    from tasks.cache import cache_records, records_folder

    records = cache_records()
    for r in records:
        what = ", ".join(r.artifacts[:2]) + (f" (+{len(r.artifacts) - 2})"
                                             if len(r.artifacts) > 2 else "")
        out.print(f"{r.name}  {r.written:%Y-%m-%d %H:%M:%S}  {r.size:>8} B  "
                  f"{'expired' if r.expired else 'live':7}  {what or '-'}",
                  markup=False, highlight=False, soft_wrap=True)
    live = sum(not r.expired for r in records)
    out.print(f"{len(records)} record(s), {live} live, {sum(r.size for r in records)} bytes in "
              f"{records_folder()}", markup=False, highlight=False, soft_wrap=True)


@cache_app.command("clear")
def clear(older_than: Optional[str] = typer.Option(None, "--older-than", help="only records "
                                                   "written longer ago than this, e.g. 7d, 12h")
          ) -> None:
    """Remove cache records (all, or those older than --older-than); the store is untouched."""
    from tasks.cache import clear_cache, records_folder

    seconds = None if older_than is None else parse_age(older_than)
    removed = clear_cache(seconds)
    out.print(f"removed {len(removed)} cache record(s), {sum(r.size for r in removed)} bytes, "
              f"from {records_folder()}", markup=False, highlight=False, soft_wrap=True)
