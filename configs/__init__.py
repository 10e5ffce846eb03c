"""Profiles as data: ``configs/profiles/*.yaml`` validated by :mod:`configs.schema`."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from configs.schema import PipelineSpec, Profile, PromptSpec
from mora.errors import MoraError

PROFILES_DIR = Path(__file__).parent / "profiles"

__all__ = ["PipelineSpec", "Profile", "PromptSpec", "list_profiles", "load_profile"]


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a built-in profile by name, or a YAML file by path; any problem is one MoraError line."""
    path = Path(name_or_path)
    if not (path.suffix in {".yaml", ".yml"} and path.is_file()):
        path = PROFILES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise MoraError(f"unknown profile '{name_or_path}' (known: {', '.join(list_profiles())})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MoraError(f"profile {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise MoraError(f"profile {path} must be a mapping")
    data.setdefault("name", path.stem)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise MoraError(f"profile {path}: {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{where}: {what}")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more
