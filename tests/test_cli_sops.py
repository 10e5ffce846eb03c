"""The SOP commands as a user runs them: bad input is one line, exit 2, nothing written."""

import subprocess

import numpy as np
import pytest

from storage import media
from tests.mora_cli import mora, run_cli
from tests.test_cli import run

BAD_INPUT = [
    (["i2v", "missing.png"], "error: image 'missing.png' does not exist"),
    (["i2v", "folder.png"], "error: image 'folder.png' is a folder, not a file"),
    (["i2v", "broken.png"], "error: image 'broken.png' is a broken symbolic link"),
    (["i2v", "empty.png"], "error: image 'empty.png' is empty (0 bytes)"),
    (["i2v", "garbage.png"], "error: image 'garbage.png' is not a readable image"),
    (["i2v", "small.png"], "error: image 'small.png' is 4x4; at least 8x8 is needed"),
    (["i2v", "clip.mp4"], "error: image 'clip.mp4' is not an image file (suffix '.mp4'"),
    (["i2v", "store://image/x/none.png"], "error: image 'store://image/x/none.png' is not in "
                                          "store"),
    (["i2v", "ok.png", ""], "error: prompt is empty"),
    (["i2v", "ok.png", "a\x01b"], "error: prompt contains control characters"),
    (["i2v", "ok.png", "--out", "clip.avi"], "error: --out must end in .mp4"),
    (["i2v", "ok.png", "--profile", "nope"], "error: unknown profile 'nope'"),
    (["i2v"], "error: Missing argument 'image'"),
    (["extend", "missing.mp4"], "error: video 'missing.mp4' does not exist"),
    (["extend", "folder.mp4"], "error: video 'folder.mp4' is a folder, not a file"),
    (["extend", "broken.mp4"], "error: video 'broken.mp4' is a broken symbolic link"),
    (["extend", "empty.mp4"], "error: video 'empty.mp4' is empty (0 bytes)"),
    (["extend", "garbage.mp4"], "error: video 'garbage.mp4' is not a readable video"),
    (["extend", "no-frames.mp4"], "error: video 'no-frames.mp4' is not a readable video"),
    (["extend", "ok.png"], "error: video 'ok.png' is not a video file (suffix '.png'"),
    (["extend", "clip.mp4", "  "], "error: prompt is empty"),
    (["extend", "clip.mp4", "--seed", "-1"], "error: seed must be an integer"),
    (["extend", "clip.mp4", "--review", "maybe"], "error: --review must be auto or ask"),
    (["edit", "clip.mp4", ""], "error: instruction is empty"),
    (["edit", "clip.mp4"], "error: Missing argument 'instruction'"),
    (["edit", "garbage.mp4", "make it snow"], "error: video 'garbage.mp4' is not a readable"),
    (["edit", "no-frames.mp4", "make it snow"], "error: video 'no-frames.mp4' is not a readable"),
    (["connect", "clip.mp4", "missing.mp4"], "error: video b 'missing.mp4' does not exist"),
    (["connect", "garbage.mp4", "clip.mp4"], "error: video a 'garbage.mp4' is not a readable"),
    (["connect", "clip.mp4", "empty.mp4"], "error: video b 'empty.mp4' is empty"),
    (["connect", "clip.mp4", "folder.mp4"], "error: video b 'folder.mp4' is a folder"),
    (["connect", "clip.mp4", "clip.mp4", "--out", "/no/such/folder/x.mp4"],
     "error: --out folder does not exist"),
    (["connect", "clip.mp4"], "error: Missing argument 'video_b'"),
    (["digital-world"], "error: give a PROMPT or --video VIDEO"),
    (["digital-world", "a city", "--video", "clip.mp4"], "error: give a PROMPT or --video VIDEO, "
                                                         "not both"),
    (["digital-world", ""], "error: prompt is empty"),
    (["digital-world", "--video", "broken.mp4"], "error: video 'broken.mp4' is a broken symbolic"),
    (["digital-world", "--video", "no-frames.mp4"], "error: video 'no-frames.mp4' is not a "
                                                    "readable"),
]


def write_inputs(folder):
    """Good and bad input files; returns their names (to check nothing else appears)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    (folder / "clip.mp4").write_bytes(media.encode_mp4(frames, 8.0))
    (folder / "ok.png").write_bytes(media.png_bytes(media.array_to_image(frames[0])))
    (folder / "small.png").write_bytes(media.png_bytes(media.array_to_image(frames[0, :4, :4])))
    for name in ("garbage.png", "garbage.mp4"):
        (folder / name).write_bytes(b"this is not media at all")
    for name in ("empty.png", "empty.mp4"):
        (folder / name).write_bytes(b"")
    for name in ("folder.png", "folder.mp4"):
        (folder / name).mkdir()
    for name in ("broken.png", "broken.mp4"):
        (folder / name).symlink_to(folder / "gone")
    import imageio_ffmpeg  # an mp4 container holding a video stream with no frames

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "color=c=black:s=16x16:r=8", "-frames:v", "0", "-c:v", "libx264",
                    str(folder / "no-frames.mp4")], check=True)
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, args, message):
    """In this process (tests/mora_cli.py), as tests/test_cli.py's table is."""
    names = write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli([*args, "--store", str(tmp_path / "store")])
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no store, no mora-store


def test_bad_input_as_a_process_exits_2_with_one_line(tmp_path):
    """The table above runs in-process; here one case as a user meets it: a process."""
    result = run("i2v", "missing.png", "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: image 'missing.png' does not exist", result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_connect_writes_playable_mp4_and_names_it(tmp_path, tiny_zoo):
    ramp = np.arange(64) * 4
    for name, shift in (("a.mp4", 0), ("b.mp4", 96)):
        frames = np.broadcast_to((ramp[None, None, :, None] + shift) % 256, (9, 64, 64, 3))
        (tmp_path / name).write_bytes(media.encode_mp4(frames.astype(np.uint8), 8.0))
    out = tmp_path / "c.mp4"
    result = mora("connect", "a.mp4", "b.mp4", "--out", str(out), "--store",
                  str(tmp_path / "store"), cwd=tmp_path, session_server=True)
    assert result.returncode == 0, result.stderr[-2000:]
    import imageio.v3 as iio

    assert iio.imread(out).shape == (27, 64, 64, 3) and iio.immeta(out)["codec"] == "h264"
    lines = result.stdout.strip().splitlines()
    assert lines[-2].startswith(f"video: {out}") and "27 frames, 64x64 @ 8 fps" in lines[-2]
    key = lines[-1].split()[2]
    assert key.startswith("video/") and key.endswith(".mp4")
    assert (tmp_path / "store" / key).read_bytes() == out.read_bytes()
