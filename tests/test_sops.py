"""The five SOPs beyond text-to-video on the tiny profile: shapes, provenance, frames kept."""

import numpy as np
import pytest

from flows.connect_videos import connect_videos
from flows.stages import ReviewLimitReached
from flows.digital_world import STYLE_INSTRUCTION, digital_world
from flows.edit_video import edit_video
from flows.extend_video import DRIFT_TOLERANCE, DriftExceeded, extend_video
from flows.image_to_video import image_to_video
from configs.errors import MoraError
from storage import open_store
from storage.inputs import read_input
from storage import media
from tasks.review import ReviewDecision, ReviewPolicy

pytestmark = pytest.mark.usefixtures("prefect_server", "tiny_zoo")

PROFILE_CLIP = (9, 64, 64, 8.0)  # tiny: frames, height, width, fps of one generated clip


def gradient(frames=9, height=64, width=64, shift=0):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([np.stack([(x * 4 + i * 8 + shift) % 256, (y * 4) % 256,
                               np.full_like(x, 128)], -1) for i in range(frames)]).astype(np.uint8)


def write_video(path, frames, fps=8.0):
    """Write an mp4 input; returns the frames a reader decodes from it (what the flow sees)."""
    path.write_bytes(media.encode_mp4(frames, fps))
    decoded, decoded_fps = media.decode_video(path.read_bytes(), ".mp4")
    assert decoded_fps == fps
    return decoded


def write_image(path, height=40, width=48):
    path.write_bytes(media.png_bytes(media.array_to_image(gradient(1, height, width)[0])))
    return str(path)


def npz(store, video):
    return media.read_frames_npz(store.get_bytes(video.frames_key))[0]


def shape(video):
    return video.num_frames, video.height, video.width, video.fps


def check_output(store, result, sop):
    """mp4 ← npz chain, the mp4 decodes to the npz's shape, every input is an input artifact."""
    video = result.video
    mp4_prov = store.read_provenance(video.mp4_key)
    assert mp4_prov.parents[-1] == video.frames_key and mp4_prov.sop == sop
    assert mp4_prov.flow_run_id and mp4_prov.profile == "tiny"
    frames, fps = media.decode_video(store.get_bytes(video.mp4_key), ".mp4")
    assert frames.shape == npz(store, video).shape and fps == video.fps
    for key in result.inputs:
        assert store.read_provenance(key).kind == "input" and key.startswith("input/")
    assert set(result.inputs) | {video.frames_key, video.mp4_key, result.preview_key} <= set(
        result.artifact_keys)
    return store.read_provenance(video.frames_key)


def test_image_to_video_animates_the_users_image(local_store, tmp_path):
    image = write_image(tmp_path / "in.png")
    result = image_to_video(image=image, prompt="a kite over a beach", store=local_store, seed=3)
    store = open_store(local_store)
    assert shape(result.video) == PROFILE_CLIP
    frames_prov = check_output(store, result, "image-to-video")
    # Not edited: the user's image is the first frame, stored once as an input artifact.
    assert result.first_frame_key == result.inputs[0] and frames_prov.parents == result.inputs
    assert frames_prov.enhanced_prompt == result.enhanced_prompt != "a kite over a beach"
    # SVD takes no text: the provenance says the prompt was not used.
    assert frames_prov.params["video_text"] is None
    assert frames_prov.params["video_text_note"] == ("StableVideoDiffusionPipeline takes no text: "
                                                     "the prompt is not used")
    input_prov = store.read_provenance(result.inputs[0])
    assert input_prov.params["source"] == image and input_prov.params["width"] == 48
    assert store.get_bytes(result.inputs[0]) == (tmp_path / "in.png").read_bytes()


def test_image_to_video_with_an_edit_reviews_the_edited_frame(local_store, tmp_path):
    result = image_to_video(image=write_image(tmp_path / "in.png"), edit_instruction="make it "
                            "night", store=local_store)
    store = open_store(local_store)
    edited = store.read_provenance(result.first_frame_key)
    assert edited.parents == result.inputs and edited.params["instruction"] == "make it night"
    assert check_output(store, result, "image-to-video").parents == [result.first_frame_key]
    assert result.prompt is None and shape(result.video) == PROFILE_CLIP


def test_extend_keeps_the_input_frames_and_measures_drift(local_store, tmp_path):
    source = write_video(tmp_path / "in.mp4", gradient())
    result = extend_video(video=str(tmp_path / "in.mp4"), store=local_store, seed=0)
    store = open_store(local_store)
    assert shape(result.video) == (18, 64, 64, 8.0)
    frames_prov = check_output(store, result, "extend-video")
    assert np.array_equal(npz(store, result.video)[:9], source)
    assert frames_prov.parents == [result.inputs[0], result.new_clips[0].frames_key]
    # The new clip starts from the input's last frame, stored as an image.
    start = store.read_provenance(result.new_clips[0].frames_key).parents[0]
    assert store.read_provenance(start).parents == result.inputs
    # Drift: measured, recorded, below the default tolerance on the tiny profile.
    print(f"tiny extend drift (gradient input, seed 0): {result.drift:.2f}")
    assert 0 < result.drift < DRIFT_TOLERANCE and not result.drift_exceeded
    assert frames_prov.params["drift"] == round(result.drift, 3)
    assert frames_prov.params["drift_tolerance"] == DRIFT_TOLERANCE


def test_extend_keeps_the_input_size_and_fps(local_store, tmp_path):
    source = write_video(tmp_path / "in.mp4", gradient(6, 48, 80), fps=12.0)
    result = extend_video(video=str(tmp_path / "in.mp4"), prompt="the camera pans on",
                          segments=2, store=local_store)
    # Each 9-frame clip at 8 fps is retimed to 12 fps: 9 × 12/8 = 13.5 → 14 frames.
    assert shape(result.video) == (6 + 2 * 14, 48, 80, 12.0)
    assert np.array_equal(npz(open_store(local_store), result.video)[:6], source)
    assert len(result.new_clips) == 2


def test_extend_drift_guard_warns_or_fails(local_store, tmp_path):
    write_video(tmp_path / "in.mp4", gradient())
    warned = extend_video(video=str(tmp_path / "in.mp4"), drift_tolerance=0.0,
                          store=local_store)
    assert warned.drift_exceeded and warned.drift > 0
    with pytest.raises(DriftExceeded, match=r"differs from the last input frame by \d+\.\d"):
        extend_video(video=str(tmp_path / "in.mp4"), drift="fail", drift_tolerance=0.5,
                     store=local_store)


def test_edit_video_edits_the_first_frame_then_animates(local_store, tmp_path):
    write_video(tmp_path / "in.mp4", gradient(5, 32, 32))
    result = edit_video(video=str(tmp_path / "in.mp4"), instruction="turn it to winter",
                        store=local_store, seed=2)
    store = open_store(local_store)
    assert shape(result.video) == PROFILE_CLIP
    assert check_output(store, result, "edit-video").parents == [result.first_frame_key]
    edited = store.read_provenance(result.first_frame_key)
    assert edited.params["instruction"] == "turn it to winter"
    original = edited.parents[0]
    assert store.read_provenance(original).parents == result.inputs
    first = np.asarray(media.read_image(store.get_bytes(original)))
    assert np.array_equal(first, media.decode_video((tmp_path / "in.mp4").read_bytes(), ".mp4")[0][0])


def test_connect_keeps_both_videos_unchanged(local_store, tmp_path):
    a = write_video(tmp_path / "a.mp4", gradient())
    b = write_video(tmp_path / "b.mp4", gradient(shift=128))
    result = connect_videos(video_a=str(tmp_path / "a.mp4"), video_b=str(tmp_path / "b.mp4"),
                            store=local_store)
    store = open_store(local_store)
    assert shape(result.video) == (27, 64, 64, 8.0)
    frames = npz(store, result.video)
    assert np.array_equal(frames[:9], a) and np.array_equal(frames[-9:], b)
    assert np.array_equal(frames[9:18], npz(store, result.transition))
    frames_prov = check_output(store, result, "connect-videos")
    assert frames_prov.parents == [result.inputs[0], result.transition.frames_key, result.inputs[1]]
    transition = store.read_provenance(result.transition.frames_key)
    assert transition.parents == result.inputs and transition.models[0].id == "tiny:wan-flf2v"
    assert len(result.seams) == 2 and frames_prov.params["seams"] == result.seams


def test_connect_conforms_size_and_fps_to_the_first_video(local_store, tmp_path):
    a = write_video(tmp_path / "a.mp4", gradient(6, 48, 80), fps=12.0)
    b = write_video(tmp_path / "b.mp4", gradient(8, 32, 32), fps=24.0)
    result = connect_videos(video_a=str(tmp_path / "a.mp4"), video_b=str(tmp_path / "b.mp4"),
                            prompt="a smooth transition", store=local_store)
    # A as it is; the transition (9 at 8 fps → 14 at 12) and B (8 at 24 fps → 4 at 12) conformed.
    assert shape(result.video) == (6 + 14 + 4, 48, 80, 12.0)
    frames = npz(open_store(local_store), result.video)
    assert np.array_equal(frames[:6], a)
    assert np.array_equal(frames[-4:], media.conform(b[::2], 48, 80))


def test_digital_world_from_a_prompt_appends_the_style(local_store):
    result = digital_world(prompt="a castle on a hill.", store=local_store)
    store = open_store(local_store)
    assert shape(result.video) == PROFILE_CLIP and result.inputs == []
    frames_prov = check_output(store, result, "digital-world")
    assert frames_prov.prompt == result.prompt == "a castle on a hill in digital world style"
    assert frames_prov.enhanced_prompt.startswith("a castle on a hill in digital world style")
    assert store.read_provenance(result.first_frame_key).models[0].id == "tiny:sd3"


def test_digital_world_from_a_video_restyles_its_first_frame(local_store, tmp_path):
    write_video(tmp_path / "real.mp4", gradient())
    result = digital_world(video=str(tmp_path / "real.mp4"), store=local_store)
    store = open_store(local_store)
    check_output(store, result, "digital-world")
    styled = store.read_provenance(result.first_frame_key)
    assert styled.params["instruction"] == STYLE_INSTRUCTION == result.style
    assert store.read_provenance(styled.parents[0]).parents == result.inputs


@pytest.fixture
def scripted_review(monkeypatch):
    """A reviewer answering from a script per stage (approve when the script runs out)."""
    script: dict[str, list[ReviewDecision]] = {}
    asked: list[str] = []

    def review(stage, attempt, preview_markdown, policy):
        asked.append(f"{stage}#{attempt}")
        answers = script.get(stage, [])
        return answers.pop(0) if answers else ReviewDecision(action="approve")

    monkeypatch.setattr("tasks.review.human_review", review)  # what review mode "ask" calls
    return script, asked


def test_reviewed_edit_and_transition_stages(local_store, tmp_path, scripted_review):
    script, asked = scripted_review
    ask = ReviewPolicy(mode="ask", max_tries=2)
    script["first-frame"] = [ReviewDecision(action="edit", instruction="add falling snow")]
    edited = image_to_video(image=write_image(tmp_path / "in.png"), edit_instruction="make it "
                            "night", store=local_store, review=ask)
    store = open_store(local_store)
    last = store.read_provenance(edited.first_frame_key)
    assert last.params["instruction"] == "add falling snow"
    assert store.read_provenance(last.parents[0]).params["instruction"] == "make it night"

    write_video(tmp_path / "a.mp4", gradient())
    script["transition"] = [ReviewDecision(action="regenerate")]
    joined = connect_videos(video_a=str(tmp_path / "a.mp4"), video_b=str(tmp_path / "a.mp4"),
                            store=local_store, seed=4, review=ask)
    assert store.read_provenance(joined.transition.frames_key).seed == 5
    assert asked == ["first-frame#1", "first-frame#2", "segment-1#1", "transition#1",
                     "transition#2"]

    script["transition"] = [ReviewDecision(action="regenerate")] * 2
    with pytest.raises(ReviewLimitReached, match="transition was not approved after 2 tries"):
        connect_videos(video_a=str(tmp_path / "a.mp4"), video_b=str(tmp_path / "a.mp4"),
                       store=local_store, review=ask)


@pytest.mark.parametrize("kwargs", [{}, {"prompt": "a city", "video": "x.mp4"}])
def test_digital_world_takes_exactly_one_input(local_store, kwargs):
    with pytest.raises(MoraError, match="exactly one"):
        digital_world(store=local_store, **kwargs)


def test_inputs_from_the_store_and_stored_once(local_store, tmp_path):
    image = write_image(tmp_path / "in.png")
    first = image_to_video(image=image, store=local_store)
    again = image_to_video(image=write_image(tmp_path / "copy.png"), store=local_store, seed=1)
    assert again.inputs == first.inputs  # cached on content, not on the path
    same = image_to_video(image=f"store://{first.inputs[0]}", store=local_store, seed=2)
    assert same.inputs == first.inputs
    # An artifact already in the store as input: its input artifact names it as the parent.
    preview = image_to_video(image=first.preview_key, store=local_store)
    store = open_store(local_store)
    assert store.read_provenance(preview.inputs[0]).parents == [first.preview_key]


def test_read_input_errors_are_one_line(local_store, tmp_path):
    store = open_store(local_store)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "link.mp4").symlink_to(tmp_path / "gone.mp4")
    for source, message in [
        (str(tmp_path / "nope.mp4"), "does not exist"),
        (str(tmp_path), "is a folder"),
        (str(tmp_path / "empty.mp4"), "is empty"),
        (str(tmp_path / "link.mp4"), "broken symbolic link"),
        ("store://video/none.mp4", "is not in store"),
        ("store://../x", "not a valid store key"),
        ("  ", "is empty"),
    ]:
        with pytest.raises(MoraError, match=message):
            read_input(source, store, "video")
    assert not (tmp_path / "store").exists()


def test_every_sop_runs_on_tiny_wan_without_a_prompt(local_store, tmp_path):
    """Wan takes text and cannot run without it: a run with no prompt gives it the edit's
    instruction or a stated neutral default, recorded in the video's provenance."""
    from agents.base import NEUTRAL_VIDEO_PROMPT

    write_video(tmp_path / "in.mp4", gradient())
    video, store = str(tmp_path / "in.mp4"), open_store(local_store)
    common = dict(profile="tiny-wan", store=local_store)
    runs = {
        "image-to-video": image_to_video(image=write_image(tmp_path / "in.png"), **common),
        "extend-video": extend_video(video=video, **common),
        "edit-video": edit_video(video=video, instruction="turn it to winter", **common),
        "connect-videos": connect_videos(video_a=video, video_b=video, **common),
        "digital-world": digital_world(video=video, **common),
    }
    for sop, result in runs.items():
        clip = getattr(result, "transition", None) or (getattr(result, "new_clips", None) or [result.video])[0]
        made = store.read_provenance(clip.frames_key)
        if sop == "edit-video":
            made = store.read_provenance(result.video.frames_key)
            assert made.params["video_text"] == "turn it to winter", sop
        else:
            assert made.params["video_text"] == NEUTRAL_VIDEO_PROMPT, sop
        assert made.params["video_text_note"].startswith("no prompt"), sop
        assert made.models[0].id.startswith("tiny:wan") and result.video.num_frames >= 9
