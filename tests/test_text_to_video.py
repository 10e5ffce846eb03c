"""The text-to-video flow on the tiny profile, under one session-wide Prefect test server."""

import numpy as np
import pytest

from agents.cache import MODEL_CACHE
from flows.text_to_video import text_to_video
from storage import open_store
from storage import media

pytestmark = pytest.mark.usefixtures("prefect_server", "tiny_zoo")


def test_two_segments_make_one_playable_video_with_provenance(local_store):
    result = text_to_video(prompt="a red fox running through fresh snow", segments=2,
                           store=local_store, seed=7)
    store = open_store(local_store)

    # Frames = segments × frames per segment, at the profile's resolution.
    video = result.video
    assert (video.num_frames, video.height, video.width, video.fps) == (18, 64, 64, 8.0)
    mp4, fps = media.decode_video(store.get_bytes(video.mp4_key), ".mp4")
    assert mp4.shape == (18, 64, 64, 3) and fps == 8.0
    frames, _ = media.read_frames_npz(store.get_bytes(video.frames_key))
    clip_frames = [media.read_frames_npz(store.get_bytes(c.frames_key))[0] for c in result.clips]
    assert np.array_equal(frames, np.concatenate(clip_frames))

    # Provenance chain: mp4 ← frames ← clips ← (first frame | last frame of the clip before).
    mp4_prov = store.read_provenance(video.mp4_key)
    assert mp4_prov.parents[-1] == video.frames_key and mp4_prov.sop == "text-to-video"
    assert mp4_prov.prompt == "a red fox running through fresh snow"
    assert mp4_prov.enhanced_prompt == result.enhanced_prompt != mp4_prov.prompt
    assert mp4_prov.profile == "tiny" and mp4_prov.flow_run_id
    assert store.read_provenance(video.frames_key).parents == [c.frames_key for c in result.clips]
    first, second = (store.read_provenance(c.frames_key) for c in result.clips)
    assert first.parents == [result.first_frame_key] and first.seed == 7
    assert first.models[0].id == "tiny:svd"
    last_frame_key = second.parents[0]
    assert store.read_provenance(last_frame_key).parents == [result.clips[0].frames_key]
    last = np.asarray(media.read_image(store.get_bytes(last_frame_key)))
    assert np.array_equal(last, clip_frames[0][-1])
    assert store.read_provenance(result.first_frame_key).models[0].id == "tiny:sd3"


def test_second_run_in_process_loads_no_model(local_store):
    text_to_video(prompt="a lighthouse at dusk", store=local_store, seed=1)
    loads = MODEL_CACHE.stats.loads
    text_to_video(prompt="a different prompt entirely", segments=2, store=local_store, seed=2)
    assert MODEL_CACHE.stats.loads == loads


def test_rerun_of_same_inputs_generates_nothing(local_store, generation_calls):
    first = text_to_video(prompt="waves on a rocky shore", store=local_store, seed=11)
    assert generation_calls.count("TextToImageAgent") == 1
    assert generation_calls.count("ImageToVideoAgent") == 1
    keys_before = open_store(local_store).list()
    generation_calls.clear()
    again = text_to_video(prompt="waves on a rocky shore", store=local_store, seed=11)
    assert generation_calls == []
    assert again.video == first.video and again.first_frame_key == first.first_frame_key
    new = set(open_store(local_store).list()) - set(keys_before)
    assert all(key.startswith("image/") for key in new)  # only the new run's contact sheet


def test_s3_and_local_stores_hold_the_same_artifacts(local_store, s3_store_url):
    on_disk = text_to_video(prompt="a paper boat on a puddle", store=local_store, seed=5)
    on_s3 = text_to_video(prompt="a paper boat on a puddle", store=s3_store_url, seed=5)
    disk, s3 = open_store(local_store), open_store(s3_store_url)
    assert on_s3.store == s3_store_url and on_s3.mp4_uri.startswith("s3://")

    def kinds(store):
        return sorted(store.read_provenance(k).params.get("stage", "") + ":" + k.rsplit(".", 1)[1]
                      for k in store.list())

    assert kinds(disk) == kinds(s3)
    for a, b in [(on_disk.video.frames_key, on_s3.video.frames_key),
                 (on_disk.first_frame_key, on_s3.first_frame_key)]:
        assert disk.get_bytes(a) == s3.get_bytes(b)
        pa, pb = disk.read_provenance(a), s3.read_provenance(b)
        assert (pa.sha256, pa.seed, pa.prompt, pa.models) == (pb.sha256, pb.seed, pb.prompt, pb.models)


def test_run_page_shows_result_and_progress_artifacts(local_store):
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    result = text_to_video(prompt="a hot air balloon", segments=3, store=local_store, seed=9)
    run_id = open_store(local_store).read_provenance(result.video.mp4_key).flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)])))
    by_type = {a.type: a for a in artifacts}
    assert by_type["progress"].data == 100.0
    assert by_type["progress"].description == "text-to-video: 3 of 3 segment(s) generated"
    markdown = by_type["markdown"].data
    assert by_type["markdown"].key == "text-to-video-result"
    assert result.video.mp4_key in markdown and "contact sheet" in markdown
    assert "27 × 64x64 @ 8" in markdown and "a hot air balloon" in markdown
