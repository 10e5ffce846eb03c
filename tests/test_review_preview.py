"""What a reviewer sees: inline previews within their size cap, presigned links on S3, the
forms' schemas, the previews a terminal saves, and s3://bucket/key inputs. No flow runs here."""

from __future__ import annotations

import io
import re
import urllib.parse
import urllib.request

import numpy as np
import pytest

from configs.errors import MoraError
from storage import open_store
from storage.inputs import read_input
from storage import media
from tasks.artifacts import RunContext, load_frames, provenance, save_image, save_video
from tasks.report import LINK_MARGIN_S, clip_preview, clips_preview, image_preview
from mora.cli_review import plain_description, preview_media
from tasks.review import CandidateDecision, ReviewDecision
from tests.s3server import S3_BUCKET

CTX = RunContext(sop="test", profile="tiny")
CAP = media.PREVIEW_MAX_BYTES


def noisy(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Hard to compress: the worst case for the cap."""
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def decoded_sides(description: str) -> list[tuple[int, int]]:
    import imageio.v3 as iio

    sides = []
    for suffix, data in preview_media(description):
        frames = iio.imread(data, extension=suffix)
        sides.append(frames.shape[-3:-1])
    return sides


def test_previews_of_a_large_profile_sized_frame_and_clip_stay_within_the_cap(tmp_path):
    store = open_store(str(tmp_path / "store"))
    frame = noisy(1, 576, 1024)
    image_key = save_image(store, media.array_to_image(frame[0]), provenance("image", CTX))
    video = save_video(store, noisy(16, 576, 1024, seed=1), 8.0, provenance("video", CTX))

    image = image_preview(store.url, image_key, "first frame", expires_s=3600)
    clip = clip_preview(store.url, video, "segment 1", expires_s=3600)
    for description in (image, clip):
        assert len(description.encode()) <= CAP
        (height, width), = decoded_sides(description)
        assert max(height, width) <= media.PREVIEW_MAX_SIDE and width > height
        assert store.uri(image_key if description is image else video.mp4_key) in description
    assert "![first frame](data:image/png;base64," in image
    assert '<video src="data:video/mp4;base64,' in clip and "autoplay loop muted" in clip
    assert "http" not in image + clip  # a local store has no links to share


def test_a_small_clip_previews_as_its_stored_mp4_and_a_noisy_one_is_still_fitted(tmp_path):
    store = open_store(str(tmp_path / "store"))
    frames = np.repeat(np.linspace(0, 255, 64 * 64 * 3).astype(np.uint8).reshape(1, 64, 64, 3),
                       9, axis=0)
    small = save_video(store, frames, 8.0, provenance("video", CTX))
    (suffix, data), = preview_media(clip_preview(store.url, small, "result"))
    # what the frames' own preview encodes, read back instead of encoded again
    assert suffix == ".mp4" and data == store.get_bytes(small.mp4_key)
    assert data == media.fit_preview(load_frames(store, small.frames_key)[0], 8.0, CAP)[0]
    noisy_clip = save_video(store, noisy(8, 256, 256, seed=2), 8.0, provenance("video", CTX))
    tight = clip_preview(store.url, noisy_clip, "segment", budget=CAP // 4)
    (height, width), = decoded_sides(tight)  # too big as stored: shrunk to fit
    assert len(tight.encode()) <= CAP // 4 + 500 and max(height, width) < 256


def test_candidates_play_side_by_side_numbered(tmp_path):
    store = open_store(str(tmp_path / "store"))
    videos = [save_video(store, np.full((4, 48, 64, 3), 60 * i, np.uint8), 8.0,
                         provenance("video", CTX)) for i in range(3)]
    description = clips_preview(store.url, videos, "candidates 1-3")
    assert len(description.encode()) <= CAP
    (height, width), = decoded_sides(description)
    assert (height, width) == (48, 3 * 64)
    assert [line.split(".")[0] for line in description.splitlines() if line[:1].isdigit()] == \
        ["1", "2", "3"]
    grid = media.tile_clips([load_frames(store, v.frames_key)[0] for v in videos])
    assert grid.shape == (4, 48, 192, 3)
    assert (grid[0, 2:12, 3:10] != grid[0, 30, 30]).any()  # the number's stamp in the corner


def test_s3_previews_link_to_a_presigned_url_that_expires_with_the_pause(s3_store_url):
    store = open_store(s3_store_url)
    key = save_image(store, media.array_to_image(noisy(1, 40, 60)[0]), provenance("image", CTX))
    description = image_preview(s3_store_url, key, "first frame", expires_s=1800)
    link = re.search(r"\[full size\]\((http[^)]+)\)", description).group(1)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    assert query["X-Amz-Expires"] == [str(1800 + LINK_MARGIN_S)]
    assert set(query) == {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                          "X-Amz-SignedHeaders", "X-Amz-Signature"}  # SigV4; no secret key
    with urllib.request.urlopen(link, timeout=30) as response:  # a browser can GET it
        assert response.read() == store.get_bytes(key)
    assert "data:image/png;base64," in description  # and the inline preview, for browsers
    # that cannot reach the bucket's endpoint
    week = 7 * 24 * 3600
    assert f"X-Amz-Expires={week}" in store.share_url(key, 10 * week)
    assert open_store(s3_store_url).share_url(key, 60) != link


def test_terminal_text_and_saved_previews():
    png = media.preview_png(np.zeros((1, 20, 30, 3), np.uint8)[0])
    mp4 = media.preview_mp4(np.zeros((4, 20, 30, 3), np.uint8), 8.0)
    import base64

    text = (f"### Review\n\n![a](data:image/png;base64,{base64.b64encode(png).decode()})\n\n"
            f'<video src="data:video/mp4;base64,{base64.b64encode(mp4).decode()}" title="b" '
            "autoplay loop muted controls playsinline></video>\n\n**b**: `/x.mp4`")
    assert preview_media(text) == [(".png", png), (".mp4", mp4)]
    plain = plain_description(text)
    assert "base64" not in plain and "[inline image/png preview" in plain
    assert plain.endswith("**b**: `/x.mp4`")


def test_review_forms_a_reviewer_understands():
    schema = ReviewDecision.model_json_schema()
    assert schema["properties"]["instruction"]["type"] == "string"  # a text box, no toggle
    assert schema["properties"]["action"]["enum"] == ["approve", "regenerate", "edit"]
    assert schema["then"]["required"] == ["instruction"]
    ReviewDecision(action="approve")
    with pytest.raises(ValueError, match="edit needs an instruction"):
        ReviewDecision(action="edit", instruction="  ")

    three = CandidateDecision.for_set(3)
    props = three.model_json_schema()["properties"]
    assert (props["candidate"]["minimum"], props["candidate"]["maximum"]) == (1, 3)
    assert "action" in three.model_json_schema()["required"]  # the reviewer chooses
    assert three(action="pick", candidate=3).candidate == 3
    for bad in (0, 4):
        with pytest.raises(ValueError):
            three(action="pick", candidate=bad)
    assert three(action="reject").action == "reject"


def test_s3_inputs_are_read_with_the_stores_endpoint(s3_store_url, tmp_path):
    import boto3

    data = media.png_bytes(media.array_to_image(noisy(1, 16, 16)[0]))
    boto3.client("s3").put_object(Bucket=S3_BUCKET, Key="uploads/frame.png", Body=data)
    for store in (open_store(s3_store_url), open_store(str(tmp_path / "local"))):
        got = read_input(f"s3://{S3_BUCKET}/uploads/frame.png", store, "image")
        assert (got.data, got.suffix, got.source) == (data, ".png",
                                                      f"s3://{S3_BUCKET}/uploads/frame.png")
    with pytest.raises(MoraError, match=f"^image 's3://{S3_BUCKET}/uploads/none.png' does not "
                                        "exist at http://127.0.0.1"):
        read_input(f"s3://{S3_BUCKET}/uploads/none.png", None, "image")
    with pytest.raises(MoraError, match="is not a valid S3 object: no object key"):
        read_input(f"s3://{S3_BUCKET}", None, "image")
    with pytest.raises(MoraError, match="is not a valid S3 object"):
        read_input("s3://Bad_Bucket/x.png", None, "image")
    assert io.BytesIO(data).read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.usefixtures("prefect_server", "tiny_zoo")
def test_a_run_given_an_s3_image_completes_and_a_missing_one_is_one_line(s3_store_url):
    """What a dashboard run posts: parameters only, the image as s3://bucket/key."""
    import subprocess
    import sys

    import boto3

    from flows.image_to_video import image_to_video

    data = media.png_bytes(media.array_to_image(noisy(1, 40, 48)[0]))
    boto3.client("s3").put_object(Bucket=S3_BUCKET, Key="uploads/run.png", Body=data)
    source = f"s3://{S3_BUCKET}/uploads/run.png"
    result = image_to_video(image=source, store=s3_store_url, seed=1)
    store = open_store(s3_store_url)
    (given,) = result.inputs
    assert store.get_bytes(given) == data
    assert store.read_provenance(given).params["source"] == source
    assert store.exists(result.video.mp4_key)

    missing = subprocess.run(
        [sys.executable, "-m", "mora.cli", "i2v", f"s3://{S3_BUCKET}/uploads/none.png",
         "--store", s3_store_url], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
    assert re.fullmatch(rf"error: image 's3://{S3_BUCKET}/uploads/none.png' does not exist at "
                        r"http://127\.0\.0\.1:\d+", missing.stderr.strip()), missing.stderr
