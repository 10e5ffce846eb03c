"""Process-wide model cache: a model is loaded once per worker process and reused by every task.

Keyed by what makes two loads the same (pipeline class, resolved weights, revision, dtype,
device); a second agent or a second flow run in the same process asking for the same key gets
the loaded object back and ``stats.loads`` does not move.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass
class CacheStats:
    loads: int = 0
    hits: int = 0


class ModelCache:
    def __init__(self) -> None:
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.stats = CacheStats()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """Return the model stored under ``key``, calling ``load()`` only the first time."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                self.stats.hits += 1
                return self._models[key]
            model = load()
            self._models[key] = model
            self.stats.loads += 1
            return model

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODEL_CACHE = ModelCache()
