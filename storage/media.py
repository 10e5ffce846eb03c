"""Frames, images and videos as bytes: PNG, lossless frame archives (.npz), playable mp4.

Stages hand frames to each other losslessly (PNG for images, ``.npz`` for clips); the mp4 is
the playable rendition for people. Everything here is pure: bytes in, bytes out. It lives in
storage/ because it is how artifacts are encoded in the store (tasks/artifacts.py writes and
reads them through it); it knows no store backend.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

from configs.errors import MoraError

if TYPE_CHECKING:
    from PIL.Image import Image

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
MAX_FRAMES = 10_000
MAX_SIDE = 8192  # a user's image or video frame; larger inputs are refused before decoding
MAX_DECODED_BYTES = 4 << 30  # decoded frames are held in memory (T×H×W×3 uint8)

# imageio-ffmpeg starts every ffmpeg with ``preexec_fn=os.setpgrp`` (imageio_ffmpeg/_utils.py,
# ``_popen_kwargs``) so that Ctrl-C does not reach it, and a ``preexec_fn`` makes Python fork()
# this whole process instead of vfork()-ing it: in a process holding torch and the models that is
# ~50 ms and ~20 CPU-ms per ffmpeg call, more the bigger the process (a GPU worker), and an mp4
# write or read is one to three calls (benchmarks/bench_ffmpeg_spawn.py). imageio-ffmpeg's own
# switch turns it off; Ctrl-C then reaches ffmpeg with the rest of the command, which stops at
# Ctrl-C anyway. A user's own setting of the variable wins.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")


def images_to_array(images: list["Image"]) -> np.ndarray:
    """A list of PIL images → T×H×W×3 uint8."""
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])


def array_to_image(frame: np.ndarray) -> "Image":
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB")


def png_bytes(image: "Image") -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def read_image(data: bytes, name: str = "image") -> "Image":
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL's size warning: the size is checked right here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        _check_side(name, *image.size)  # from the header: a huge image is never decoded
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise MoraError(f"{name} is not a readable image ({exc.__class__.__name__})") from None
    return image.convert("RGB")


def _check_side(name: str, width: int, height: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE:
        raise MoraError(f"{name} is {width}x{height}; at most {MAX_SIDE}x{MAX_SIDE} is supported")


def _check_decoded_size(name: str, frames: float, width: int, height: int) -> None:
    """Refuse a video whose decoded frames would not fit the limits (from metadata or counts)."""
    _check_side(name, width, height)
    if frames > MAX_FRAMES:
        raise MoraError(f"{name} has about {int(frames)} frames; at most {MAX_FRAMES} are "
                        "supported")
    if frames * width * height * 3 > MAX_DECODED_BYTES:
        raise MoraError(f"{name} is too large to decode ({int(frames)} frames of {width}x{height}"
                        f"; at most {MAX_DECODED_BYTES >> 30} GiB decoded)")


def frames_npz(frames: np.ndarray, fps: float) -> bytes:
    check_frames(frames)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, frames=frames, fps=np.float64(fps))
    return buffer.getvalue()


def read_frames_npz(data: bytes) -> tuple[np.ndarray, float]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return archive["frames"], float(archive["fps"])


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
    """H.264 yuv420p: plays in browsers and players (sizes are padded to even numbers)."""
    import imageio.v3 as iio

    check_frames(frames)
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return iio.imwrite("<bytes>", frames, extension=".mp4", fps=fps, codec="libx264",
                       macro_block_size=1, quality=8)


def decode_video(data: bytes, suffix: str, name: str = "video") -> tuple[np.ndarray, float]:
    """Decode a video file's bytes → (T×H×W×3 uint8 frames, fps)."""
    import imageio.v3 as iio

    if suffix == ".npz":
        try:
            return read_frames_npz(data)
        except (ValueError, KeyError, OSError) as exc:
            raise MoraError(f"{name} is not a frame archive ({exc.__class__.__name__})") from None
    try:
        meta = iio.immeta(data, extension=suffix)
    except Exception as exc:  # imageio raises many types for a damaged or foreign file
        raise MoraError(f"{name} is not a readable video ({str(exc).splitlines()[0][:120]})") from None
    _check_meta(name, meta)
    try:
        frames = iio.imread(data, extension=suffix)
    except Exception as exc:
        raise MoraError(f"{name} is not a readable video ({str(exc).splitlines()[0][:120]})") from None
    frames = np.asarray(frames)
    if frames.ndim == 3:  # a single frame
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise MoraError(f"{name} has no frames")
    frames = frames[..., :3].astype(np.uint8, copy=False)
    fps = float(meta.get("fps") or 8.0)
    return frames, fps


def _check_meta(name: str, meta: dict) -> None:
    """What the container says (size, duration × fps), checked before any frame is decoded."""
    size = meta.get("size")
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        return  # e.g. GIF: no size in the metadata; the decoded frames are checked instead
    fps, duration = meta.get("fps") or 0.0, meta.get("duration") or 0.0
    estimate = fps * duration if np.isfinite(fps * duration) else 0.0
    _check_decoded_size(name, estimate, int(size[0]), int(size[1]))


def check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MoraError(f"frames must be T×H×W×3 uint8, got {frames.shape} {frames.dtype}")
    if not 1 <= frames.shape[0] <= MAX_FRAMES:
        raise MoraError(f"a video needs 1 to {MAX_FRAMES} frames, got {frames.shape[0]}")


def contact_sheet(frames: np.ndarray, columns: int = 8, max_frames: int = 16) -> "Image":
    """Evenly spaced frames tiled in a grid: the preview of a video in one image."""
    picks = np.linspace(0, len(frames) - 1, num=min(max_frames, len(frames))).round().astype(int)
    tiles = frames[picks]
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    _, h, w, _ = tiles.shape
    sheet = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return array_to_image(sheet)


def conform(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize every frame to height×width (no-op when it already is)."""
    if frames.shape[1:3] == (height, width):
        return frames
    from PIL import Image

    return np.stack([np.asarray(array_to_image(f).resize((width, height), Image.BICUBIC))
                     for f in frames])


def join_clips(clips: list[np.ndarray]) -> np.ndarray:
    """Concatenate clips of one size in time order."""
    return np.concatenate(clips)


MIN_SIDE = 8  # the generation agents need at least 8x8
MIN_VIDEO_FRAMES = 2  # a 1-frame "video" is a still: extend, connect and the metrics need motion
MAX_FPS = 1000.0


def decode_input(data: bytes, suffix: str, kind: str, name: str) -> tuple[np.ndarray, float | None]:
    """A user's image (1×H×W×3, fps None) or video (T×H×W×3, fps), or a one-line MoraError."""
    allowed = IMAGE_SUFFIXES if kind == "image" else VIDEO_SUFFIXES
    if suffix not in allowed:
        raise MoraError(f"{name} is not {'an image' if kind == 'image' else 'a video'} file "
                        f"(suffix '{suffix}'; use one of {' '.join(sorted(allowed))})")
    if kind == "image":
        frames, fps = images_to_array([read_image(data, name)]), None
    else:
        frames, fps = decode_video(data, suffix, name)
        if not 0 < fps <= MAX_FPS:
            raise MoraError(f"{name} has an invalid frame rate ({fps})")
        if len(frames) < MIN_VIDEO_FRAMES:
            raise MoraError(f"{name} has {len(frames)} frame; a video needs at least "
                            f"{MIN_VIDEO_FRAMES} (give a still image to image-to-video instead)")
        _check_decoded_size(name, len(frames), frames.shape[2], frames.shape[1])
    _, h, w, _ = frames.shape
    if h < MIN_SIDE or w < MIN_SIDE:
        raise MoraError(f"{name} is {w}x{h}; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    return frames, fps


def retime(frames: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Resample a clip to ``target_fps`` by nearest earlier frame, keeping its duration."""
    if fps == target_fps:
        return frames
    count = max(1, round(len(frames) * target_fps / fps))
    picks = np.minimum(np.floor(np.arange(count) * fps / target_fps + 1e-9).astype(int),
                       len(frames) - 1)
    return frames[picks]


def join_conformed(clips: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, float]:
    """Join clips of any size and rate in time order, at the first clip's size and fps.

    The first clip's frames are kept unchanged; the others are resized and retimed to it.
    """
    first, fps = clips[0]
    _, h, w, _ = first.shape
    return join_clips([first] + [conform(retime(f, r, fps), h, w) for f, r in clips[1:]]), fps


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two frames in 0-255 pixel units (b resized to a's size)."""
    b = conform(b[None], *a.shape[:2])[0]
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- Previews for reviewers: small enough to live inline in a pause's description -------------
# The Resume form's description (markdown, data: URIs included) is stored in the Prefect
# server's database, so each pause carries at most PREVIEW_MAX_BYTES of inline media, every
# picture or tile at most PREVIEW_MAX_SIDE px on its long side; the full-size artifact stays in
# the store and the description says where.
PREVIEW_MAX_SIDE = 256
PREVIEW_MAX_BYTES = 300_000  # of description text, base64 included
PREVIEW_MAX_FRAMES = 48
_PREVIEW_SIDES = (PREVIEW_MAX_SIDE, 192, 128, 96, 64)


def shrink(frames: np.ndarray, max_side: int) -> np.ndarray:
    """Frames scaled down (never up) so the long side is at most ``max_side``, sides even."""
    _, h, w, _ = frames.shape
    scale = min(1.0, max_side / max(h, w))
    height, width = max(2, round(h * scale) // 2 * 2), max(2, round(w * scale) // 2 * 2)
    from PIL import Image

    if (height, width) == (h, w):
        return frames
    return np.stack([np.asarray(array_to_image(f).resize((width, height), Image.LANCZOS))
                     for f in frames])


def tile_clips(clips: list[np.ndarray], max_side: int = PREVIEW_MAX_SIDE) -> np.ndarray:
    """Clips side by side (a grid past four), each shrunk to ``max_side`` and numbered 1..n
    in its corner as the review form numbers them; shorter clips hold their last frame."""
    from PIL import ImageDraw

    tiles = [shrink(clip, max_side) for clip in clips]
    length = max(len(t) for t in tiles)
    _, h, w, _ = tiles[0].shape
    columns = tile_columns(len(tiles))
    rows = -(-len(tiles) // columns)
    grid = np.full((length, rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        tile = conform(tile, h, w)
        tile = np.concatenate([tile, np.repeat(tile[-1:], length - len(tile), axis=0)])
        r, c = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    label = np.zeros((14, 12 + 7 * len(str(len(tiles))), 3), dtype=np.uint8)
    for i in range(len(tiles)):
        image = array_to_image(label)
        ImageDraw.Draw(image).text((3, 1), str(i + 1), fill=(255, 255, 0))
        r, c = divmod(i, columns)
        stamp = np.asarray(image)[: h, : w]
        grid[:, r * h:r * h + stamp.shape[0], c * w:c * w + stamp.shape[1]] = stamp
    return grid


def tile_columns(count: int) -> int:
    """One row up to four tiles, else two rows."""
    return count if count <= 4 else -(-count // 2)


def preview_png(frame: np.ndarray, max_side: int = PREVIEW_MAX_SIDE) -> bytes:
    return png_bytes(array_to_image(shrink(frame[None], max_side)[0]))


def preview_mp4(frames: np.ndarray, fps: float, max_side: int = PREVIEW_MAX_SIDE,
                max_frames: int = PREVIEW_MAX_FRAMES) -> bytes:
    """A short, small H.264 rendition: the first ``max_frames`` frames, shrunk."""
    return encode_mp4(shrink(frames[:max_frames], max_side), fps)


def is_own_preview(num_frames: int, height: int, width: int) -> bool:
    """Whether a clip's mp4 (``encode_mp4`` of its frames) is also its largest preview:
    ``preview_mp4`` would keep every frame at its size and encode the same frames again."""
    return (num_frames <= PREVIEW_MAX_FRAMES and max(height, width) <= PREVIEW_MAX_SIDE
            and height % 2 == 0 and width % 2 == 0)


def fits_budget(data: bytes, budget: int) -> bool:
    """Whether ``data`` as base64 takes at most ``budget`` characters."""
    return -(-len(data) // 3) * 4 <= budget


def fit_preview(frames: np.ndarray, fps: float | None, budget: int,
                tiles_across: int = 1) -> tuple[bytes, str] | None:
    """The largest preview (PNG for a still, mp4 for a clip) whose base64 fits ``budget``
    characters, with its MIME type; None when not even the smallest does. A picture of
    ``tiles_across`` tiles side by side may be that many times as wide."""
    for side in (s * tiles_across for s in _PREVIEW_SIDES):
        if fps is None:
            data, mime = preview_png(frames[0], side), "image/png"
        else:
            data, mime = preview_mp4(frames, fps, side), "video/mp4"
        if fits_budget(data, budget):
            return data, mime
    return None
