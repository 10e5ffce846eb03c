"""Process-wide model cache: a model is loaded once per worker process and reused by every task.

Keyed by what makes two loads the same (resolved weights, revision, dtype, device, …); a second
agent or a second flow run in the same process asking for the same key gets the loaded object
back and ``stats.loads`` does not move.

Memory budget: with ``budget_bytes`` (default: ``MORA_MODEL_BUDGET_GB``, unset = no limit) the
cache evicts least-recently-used entries before adding one that would exceed it. An entry's
size is the bytes of the torch parameters and buffers it holds (any device), counted once per
tensor storage across the whole cache: pipelines that share a VAE or a text encoder (built with
``from_pipe``) count it once, and evicting an entry whose modules another entry still holds
frees nothing, so eviction goes on to the next one. An entry larger than the whole budget is
still loaded (everything else is evicted, and a warning is logged): the budget is a target,
not a guarantee. Evicted models are loaded again on their next use.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mora.cache")
_UNSET = object()


@dataclass
class CacheStats:
    loads: int = 0
    hits: int = 0
    evictions: int = 0
    shared: int = 0  # pipelines built from an already loaded model's components (no load)


class ModelCache:
    def __init__(self, budget_bytes: int | None | object = _UNSET) -> None:
        """``budget_bytes``: None for no limit; left out, read from the environment per add."""
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._storages: dict[Hashable, dict[tuple, int]] = {}
        self._lock = threading.RLock()
        self._budget = budget_bytes
        self.stats = CacheStats()

    @property
    def budget_bytes(self) -> int | None:
        if self._budget is _UNSET:
            from configs.settings import model_budget_bytes

            return model_budget_bytes()
        return self._budget  # type: ignore[return-value]

    @budget_bytes.setter
    def budget_bytes(self, value: int | None) -> None:
        self._budget = value

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """Return the model stored under ``key``, calling ``load()`` only when it is not held."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                self.stats.hits += 1
                return self._models[key]
            model = load()
            self.stats.loads += 1
            self._add(key, model)
            return model

    def _add(self, key: Hashable, model: Any) -> None:
        storages = tensor_storages(model)
        self._models[key] = model
        self._storages[key] = storages
        budget = self.budget_bytes
        if budget is None:
            return
        while self.total_bytes() > budget and len(self._models) > 1:
            oldest = next(iter(self._models))
            if oldest == key:
                break
            self._evict(oldest)
        if self.total_bytes() > budget:
            log.warning("model %s needs %.2f GB, more than the %.2f GB model budget on its own "
                        "(MORA_MODEL_BUDGET_GB); loaded anyway", _name(key),
                        _gb(sum(storages.values())), _gb(budget))

    def _evict(self, key: Hashable) -> None:
        del self._models[key]
        del self._storages[key]
        self.stats.evictions += 1
        log.info("evicted model %s (least recently used) to stay within the model budget",
                 _name(key))

    def total_bytes(self) -> int:
        """Bytes of all tensors the cache holds, each storage counted once."""
        with self._lock:
            seen: dict[tuple, int] = {}
            for storages in self._storages.values():
                seen.update(storages)
            return sum(seen.values())

    def nbytes(self, key: Hashable) -> int:
        """Bytes of the tensors the entry ``key`` holds (shared ones included)."""
        with self._lock:
            return sum(self._storages[key].values())

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._storages.clear()


def tensor_storages(model: Any) -> dict[tuple, int]:
    """``{(device, storage address): bytes}`` of every parameter and buffer ``model`` holds."""
    storages: dict[tuple, int] = {}
    for module in torch_modules(model):
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return storages


def torch_modules(model: Any, _depth: int = 0) -> Iterator[Any]:
    """The torch modules inside a cached object: a module, a diffusers pipeline (``components``),
    a transformers pipeline (``model``), or a tuple/list/dict of those."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or _depth > 3:  # nothing can hold a module before torch is imported
        return
    if isinstance(model, torch.nn.Module):
        yield model
    elif isinstance(model, (tuple, list)):
        for item in model:
            yield from torch_modules(item, _depth + 1)
    elif isinstance(model, dict):
        for item in model.values():
            yield from torch_modules(item, _depth + 1)
    elif isinstance(getattr(model, "components", None), dict):
        yield from torch_modules(model.components, _depth + 1)
    elif isinstance(getattr(model, "model", None), torch.nn.Module):
        yield model.model


def _gb(n: int) -> float:
    return n / 1024**3


def _name(key: Hashable) -> str:
    if isinstance(key, tuple):
        return "/".join(str(k) for k in key[:3] if k is not None)
    return str(key)


MODEL_CACHE = ModelCache()
