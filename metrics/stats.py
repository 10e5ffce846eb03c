"""Intervals for per-sample scores: the mean with a bootstrap confidence interval (scipy)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def bootstrap_mean(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float | None, float | None]:
    """``(mean, low, high)``: the mean of ``values`` and its ``confidence`` bootstrap interval
    (``scipy.stats.bootstrap``, percentile method, a fixed seed so a report is reproducible).
    With fewer than two values there is no interval: ``low`` and ``high`` are None."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    mean = float(data.mean()) if len(data) else float("nan")
    if len(data) < 2:
        return mean, None, None
    if np.all(data == data[0]):  # every resample has the same mean
        return mean, mean, mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small samples warn about their degenerate resamples
        result = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples,
                           method="percentile", rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return mean, float(interval.low), float(interval.high)
