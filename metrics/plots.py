"""Figures of the training loop's per-round measures (matplotlib, headless): what the `train`
flow stores beside its round reports (tasks/training.py `plot_rounds`)."""

from __future__ import annotations

import io


def rounds_png(reports: list[dict]) -> bytes:
    """A PNG of the per-round figures: held-out score before/after, agreement, loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round_id"] for r in reports]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for when, style in (("before", "o--"), ("after", "o-")):
        means = [r[f"held_out_{when}"] for r in reports]
        bounds = [r.get(f"held_out_{when}_ci") or [m, m] for r, m in zip(reports, means)]
        errors = [[m - b[0] for m, b in zip(means, bounds)], [b[1] - m for m, b in zip(means, bounds)]]
        axes[0].errorbar(rounds, means, yerr=errors, fmt=style, capsize=3, label=when)
    axes[0].set_title("held-out judge score (95 % CI)")
    axes[0].legend()
    axes[1].bar(rounds, [r["agreement_rate"] for r in reports])
    axes[1].set_ylim(0, 1)
    axes[1].set_title("judge agreement rate")
    step = 0
    for r in reports:
        xs = list(range(step + 1, step + 1 + len(r["losses"])))
        axes[2].plot(xs, r["losses"], label=r["round_id"])
        step += len(r["losses"])
    axes[2].set_title("training loss per step")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
