"""Is a profile's model on this machine? (tiny: built; folder: exists; hub id: in the HF cache)."""

from __future__ import annotations

from pathlib import Path

from agents.identity import SHAPES_PREFIX, TINY_PREFIX


def weights_status(model: str) -> str:
    if model.startswith(TINY_PREFIX):
        from agents.tiny import tiny_model_dir

        return "built" if (tiny_model_dir(model[len(TINY_PREFIX):]) / "model_index.json").is_file() \
            else "builds on first use"
    if model.startswith(SHAPES_PREFIX):
        from agents.shapes import shapes_model_dir
        from configs.errors import MoraError

        try:
            return f"trained ({shapes_model_dir(model[len(SHAPES_PREFIX):])})"
        except MoraError as exc:
            return f"missing: {exc}"
    if Path(model).expanduser().is_dir():
        return "local folder"
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, "model_index.json")
    return "in HF cache" if isinstance(found, str) else "missing (huggingface-cli download " + model + ")"
