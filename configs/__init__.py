"""Profiles as data: ``configs/profiles/*.yaml`` validated by :mod:`configs.schema`."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from configs.schema import PipelineSpec, Profile, PromptSpec
from configs.errors import MoraError

PROFILES_DIR = Path(__file__).parent / "profiles"
TRAINING_DIR = Path(__file__).parent / "training"

__all__ = ["PipelineSpec", "Profile", "PromptSpec", "list_profiles", "list_training_configs",
           "load_profile", "load_training_config"]


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a built-in profile by name, or a YAML file by path; any problem is one MoraError line."""
    return _load_yaml(name_or_path, PROFILES_DIR, Profile, "profile")


def list_training_configs() -> list[str]:
    return sorted(p.stem for p in TRAINING_DIR.glob("*.yaml"))


def load_training_config(name_or_path: str) -> "TrainingConfig":
    """A training config by name (``configs/training/*.yaml``) or path, validated."""
    from configs.training import TrainingConfig

    return _load_yaml(name_or_path, TRAINING_DIR, TrainingConfig, "training config")


def _load_yaml(name_or_path: str, folder: Path, model: type, what: str):
    path = Path(name_or_path)
    if not (path.suffix in {".yaml", ".yml"} and path.is_file()):
        path = folder / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
            raise MoraError(f"unknown {what} '{name_or_path}' (known: {known})")
    try:
        # libyaml's loader where PyYAML has it: the same documents, ~5x faster (a flow loads
        # its profile twice per run: validating the parameter, then running)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(path.read_text())
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise MoraError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise MoraError(f"{what} {path} must be a mapping")
    data.setdefault("name", path.stem)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MoraError(f"{what} {path}: {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{where}: {what}")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more
