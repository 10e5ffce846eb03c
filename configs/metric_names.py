"""The video metrics' names, in the order ``metrics.evaluate_video`` reports them.

They sit below everything because judge configs (configs/judges.py) name metrics, and the
metrics package (metrics/base.py) checks every result against the same list."""

METRIC_NAMES: tuple[str, ...] = (
    "subject_consistency",
    "background_consistency",
    "motion_smoothness",
    "dynamic_degree",
    "aesthetic_quality",
    "imaging_quality",
    "temporal_flickering",
    "temporal_style",
    "appearance_style",
    "video_text_integration",
    "tcon",
    "tmean",
)

#: Measures of the `shapes` world (configs/world/), reported only for a prompt of its grammar and
#: with kind "world": they are that world's right answers, never VBench numbers.
WORLD_METRIC_NAMES: tuple[str, ...] = ("shapes_adherence",)
