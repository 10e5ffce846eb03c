import numpy as np
import pytest

from configs.errors import MoraError
from storage import media


def _frames(t=9, h=64, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_npz_round_trip_is_lossless():
    frames = _frames()
    back, fps = media.read_frames_npz(media.frames_npz(frames, 8.0))
    assert fps == 8.0 and np.array_equal(back, frames)


def test_mp4_is_h264_and_decodes_to_same_shape():
    import imageio.v3 as iio

    data = media.encode_mp4(_frames(t=12, h=48, w=80), 8.0)
    meta = iio.immeta(data, extension=".mp4")
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    frames, fps = media.decode_video(data, ".mp4")
    assert frames.shape == (12, 48, 80, 3) and fps == 8.0


def test_ffmpeg_starts_without_forking_this_process(monkeypatch):
    """A ``preexec_fn`` makes Python fork() the whole process for each ffmpeg (~20 CPU-ms in a
    process holding torch, more with models resident: benchmarks/bench_ffmpeg_spawn.py);
    storage/media.py turns imageio-ffmpeg's Ctrl-C guard, which sets one, off."""
    import subprocess

    started = []
    original = subprocess.Popen.__init__

    def spy(self, args, *rest, **kwargs):
        started.append((args, kwargs.get("preexec_fn")))
        original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    media.decode_video(media.encode_mp4(_frames(), 8.0), ".mp4")
    ffmpeg = [fn for args, fn in started if "ffmpeg" in str(args[0]).lower()]
    assert len(ffmpeg) >= 2 and not any(ffmpeg), started


def test_odd_sizes_are_padded_for_h264():
    frames, _ = media.decode_video(media.encode_mp4(_frames(h=33, w=35), 8.0), ".mp4")
    assert frames.shape[1:3] == (34, 36)


def test_garbage_is_not_a_video_or_image():
    with pytest.raises(MoraError, match="not a readable video"):
        media.decode_video(b"definitely not a video", ".mp4", name="clip.mp4")
    with pytest.raises(MoraError, match="not a readable image"):
        media.read_image(b"nope", name="x.png")


def test_frames_are_checked():
    with pytest.raises(MoraError, match="T×H×W×3 uint8"):
        media.frames_npz(np.zeros((4, 8, 8), dtype=np.uint8), 8)
    with pytest.raises(MoraError, match="1 to"):
        media.encode_mp4(np.zeros((0, 8, 8, 3), dtype=np.uint8), 8)


def test_contact_sheet_tiles_evenly_spaced_frames():
    frames = np.stack([np.full((10, 12, 3), i, dtype=np.uint8) for i in range(20)])
    sheet = np.asarray(media.contact_sheet(frames, columns=4, max_frames=8))
    assert sheet.shape == (20, 48, 3)
    assert sheet[0, 0, 0] == 0 and sheet[-1, -1, 0] == 19


def test_join_and_conform():
    a, b = _frames(t=3), _frames(t=4, seed=1)
    joined = media.join_clips([a, b])
    assert joined.shape[0] == 7 and np.array_equal(joined[3:], b)
    assert media.conform(a, 32, 48).shape == (3, 32, 48, 3)
    assert media.conform(a, 64, 64) is a
