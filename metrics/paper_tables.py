"""The paper's published numbers (Mora, Tables 1, 2 and 5), quoted for reference, and a
markdown table that sets our own evaluation beside them.

The values are copied from the paper's text (``/work/shared/paper/mora-paper.txt``); they are
*quoted*, never computed here.  ``∓`` in a model name is the paper's own mark, kept as printed.
Where the paper's prose and its Table 2 disagree (extend: TCON / Temporal Style of Sora and Mora;
connect: Mora's Tmean), the table's numbers are used.  No Prefect here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

#: A column of a paper table: its heading and the metric (configs/metric_names.py) it matches
#: (None where we compute no counterpart, e.g. the paper's aggregate "Video Quality").
Column = tuple[str, str | None]


@dataclass(frozen=True)
class PaperRow:
    model: str
    values: tuple[float | None, ...]  # one per column of its table; None where the paper has "-"


@dataclass(frozen=True)
class PaperTable:
    title: str  # "Mora, Table 1"
    caption: str
    columns: tuple[Column, ...]
    rows: tuple[PaperRow, ...]


# --------------------------------------------------------------------------- Table 1

TABLE1_COLUMNS: tuple[Column, ...] = (
    ("Video Quality", None),
    ("Object Consistency", "subject_consistency"),
    ("Background Consistency", "background_consistency"),
    ("Motion Smoothness", "motion_smoothness"),
    ("Aesthetic Quality", "aesthetic_quality"),
    ("Dynamic Degree", "dynamic_degree"),
    ("Imaging Quality", "imaging_quality"),
    ("Temporal Style", "temporal_style"),
)

TABLE1 = PaperTable(
    title="Mora, Table 1",
    caption="text-to-video",
    columns=TABLE1_COLUMNS,
    rows=(
        PaperRow("Sora", (0.797, 0.95, 0.96, 1.00, 0.60, 0.69, 0.58, 0.35)),
        PaperRow("Mora Type I", (0.782, 0.96, 0.97, 0.99, 0.60, 0.60, 0.57, 0.26)),
        PaperRow("Mora Type II", (0.810, 0.94, 0.95, 0.99, 0.57, 0.80, 0.61, 0.26)),
        PaperRow("Mora Type III", (0.795, 0.94, 0.93, 0.99, 0.55, 0.80, 0.56, 0.26)),
        PaperRow("Mora (SVD)∓", (0.792, 0.95, 0.95, 0.99, 0.57, 0.70, 0.59, 0.26)),
        PaperRow("Mora (Open-Sora-Plan)∓", (0.767, 0.94, 0.95, 0.99, 0.61, 0.43, 0.68, 0.26)),
        PaperRow("Mora (Open-Sora-Plan)", (0.800, 0.98, 0.97, 0.99, 0.66, 0.50, 0.70, 0.31)),
    ),
)

# --------------------------------------------------------------------------- Table 2 (per task)

_T2_ROWS = ("Sora", "Mora (SVD)∓", "Mora (Open-Sora-Plan)∓", "Mora (Open-Sora-Plan)")


def _t2(caption: str, columns: tuple[Column, ...], *values: tuple[float, ...]) -> PaperTable:
    return PaperTable("Mora, Table 2", caption, columns,
                      tuple(PaperRow(m, v) for m, v in zip(_T2_ROWS, values, strict=True)))


TABLE2: dict[str, PaperTable] = {
    "i2v": _t2("image-to-video", (("VideoTI", "video_text_integration"),
                                  ("Motion Smoothness", "motion_smoothness"),
                                  ("Dynamic Degree", "dynamic_degree"),
                                  ("Imaging Quality", "imaging_quality")),
               (0.90, 0.99, 0.75, 0.63), (0.88, 0.97, 0.75, 0.60), (0.88, 0.97, 1.00, 0.66),
               (0.90, 0.98, 1.00, 0.67)),
    "extend": _t2("extend videos", (("TCON", "tcon"), ("Imaging Quality", "imaging_quality"),
                                    ("Temporal Style", "temporal_style")),
                  (0.99, 0.43, 0.24), (0.94, 0.39, 0.22), (0.96, 0.45, 0.22), (0.98, 0.45, 0.23)),
    "edit": _t2("video-to-video editing", (("Imaging Quality", "imaging_quality"),
                                           ("Temporal Style", "temporal_style")),
                (0.52, 0.24), (0.38, 0.23), (0.34, 0.20), (0.52, 0.24)),
    "connect": _t2("connect videos", (("Imaging Quality", "imaging_quality"), ("Tmean", "tmean")),
                   (0.52, 0.64), (0.42, 0.45), (0.40, 0.39), (0.43, 0.44)),
    "digital-world": _t2("simulate digital worlds", (("Imaging Quality", "imaging_quality"),
                                                     ("Appearance Style", "appearance_style")),
                         (0.62, 0.23), (0.52, 0.23), (0.51, 0.20), (0.56, 0.23)),
}

# --------------------------------------------------------------------------- Table 5 (ablation)

TABLE5 = PaperTable(
    title="Mora, Table 5",
    caption="ablation, text-to-video",
    columns=TABLE1_COLUMNS,
    rows=(
        PaperRow("Mora (Open-Sora-Plan)", (0.800, 0.98, 0.97, 0.99, 0.66, 0.50, 0.70, 0.31)),
        PaperRow("Mora (Open-Sora-Plan)∓", (0.767, 0.94, 0.95, 0.99, 0.61, 0.43, 0.68, 0.26)),
        PaperRow("Mora w/o Human-in-the-loop", (0.785, 0.98, 0.96, 0.95, 0.63, 0.50, 0.69, 0.31)),
        PaperRow("Mora w/o Self-modulated", (0.776, 0.96, 0.95, 0.95, 0.62, 0.51, 0.67, 0.27)),
        PaperRow("Mora with RI-modulated", (0.797, 0.98, 0.96, 0.99, 0.66, 0.50, 0.69, 0.29)),
    ),
)

#: The SOP task names (as the evaluate flow takes them) → the paper table that reports them.
TASK_TABLES: dict[str, PaperTable] = {"t2v": TABLE1, **TABLE2}


def paper_table(task: str = "t2v") -> PaperTable:
    try:
        return TASK_TABLES[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASK_TABLES)}") from None


# --------------------------------------------------------------------------- ours beside theirs

def ours_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float | None, bool, int]]:
    """Per metric: (mean over the videos that have a value, any of them a proxy?, videos counted).

    ``records`` are metric records (``video, metric, value, method, kind``: metrics/base.py);
    n/a ones (value None) are left out of the mean; a metric with no value at all has mean
    None.
    """
    values: dict[str, list[float]] = {}
    proxy: dict[str, bool] = {}
    for rec in records:
        name = rec["metric"]
        values.setdefault(name, [])
        if rec.get("value") is not None:
            values[name].append(float(rec["value"]))
            proxy[name] = proxy.get(name, False) or rec.get("kind") == "proxy"
    return {name: (sum(v) / len(v) if v else None, proxy.get(name, False), len(v))
            for name, v in values.items()}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _quoted(value: float | None, heading: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if heading == "Video Quality" else f"{value:.2f}"


def paper_markdown(records: Iterable[Mapping[str, Any]], task: str = "t2v") -> str:
    """A markdown table laid out like the paper's table for ``task``: our row (mean over the
    evaluated videos; "n/a" where not computed; † on proxy values) above the paper's quoted rows,
    each labelled with where it comes from."""
    records = list(records)
    videos = len({r["video"] for r in records})
    return _markdown(paper_table(task), [(f"ours (mean of {videos} video(s))", records)])


def ablation_markdown(variants: Iterable[tuple[str, Iterable[Mapping[str, Any]]]]) -> str:
    """Table 5's layout: one row per ablation variant of ours (``(label, records)``, records of
    the variant's evaluated videos), then the paper's published ablation rows."""
    return _markdown(TABLE5, [(label, list(records)) for label, records in variants])


def _ours_cells(table: PaperTable, records: list[Mapping[str, Any]]) -> list[str]:
    summary = ours_summary(records)
    cells = []
    for _, metric in table.columns:
        mean, is_proxy, _ = summary.get(metric, (None, False, 0)) if metric else (None, False, 0)
        cells.append("n/a" if mean is None else f"{mean:.3f}" + ("†" if is_proxy else ""))
    return cells


def _markdown(table: PaperTable, ours: list[tuple[str, list[Mapping[str, Any]]]]) -> str:
    source_quoted = f"quoted from the paper ({table.title})"
    head = ["Model", "Source", *(c for c, _ in table.columns)]
    lines = [f"### {table.title} ({table.caption}): ours beside the paper's published rows", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, records in ours:
        lines.append("| " + " | ".join([_cell(label), "this evaluation",
                                         *_ours_cells(table, records)]) + " |")
    for row in table.rows:
        cells = [_cell(row.model), source_quoted,
                 *(_quoted(v, c) for v, (c, _) in zip(row.values, table.columns))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Rows marked \"{source_quoted}\" are the paper's published numbers, copied "
              "as printed; they were not recomputed here.",
              "† proxy: VBench's (or the paper's) rule around a weight-free stand-in for its "
              "network, not comparable with published VBench numbers. n/a: not computed (no "
              "local model for it, or its inputs were not given)."]
    if table.columns is TABLE1_COLUMNS:
        lines.append("Video Quality is the paper's aggregate score; we do not compute it.")
    return "\n".join(lines)
