import pytest

from configs import list_profiles, load_profile
from configs.errors import MoraError


def test_builtin_profiles_load_and_name_real_models():
    names = list_profiles()
    assert {"tiny", "sd3-svd", "sdxl-svd"} <= set(names)
    sd3 = load_profile("sd3-svd")
    assert sd3.text_to_image.model == "stabilityai/stable-diffusion-3-medium-diffusers"
    assert sd3.image_to_video.model == "stabilityai/stable-video-diffusion-img2vid-xt"
    sdxl = load_profile("sdxl-svd")
    assert sdxl.text_to_image.pipeline == "StableDiffusionXLPipeline"
    assert sdxl.image_to_image.model == "timbrooks/instruct-pix2pix"
    tiny = load_profile("tiny")
    assert tiny.image_to_video.model.startswith("tiny:") and tiny.device == "cpu"
    assert tiny.image_to_video.num_frames == 9 and tiny.image_to_video.height == 64


def _write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return str(path)


def test_unknown_profile_is_one_line_error():
    with pytest.raises(MoraError, match="unknown profile 'nope' \\(known: .*tiny"):
        load_profile("nope")


def test_unknown_key_is_named(tmp_path):
    text = (load_profile_text() + "\nspeed: fast\n")
    with pytest.raises(MoraError, match="speed: unknown key"):
        load_profile(_write(tmp_path, text))


def test_wrong_type_is_named(tmp_path):
    text = load_profile_text().replace("num_frames: 9", "num_frames: many", 1)
    with pytest.raises(MoraError) as err:
        load_profile(_write(tmp_path, text))
    assert "image_to_video.num_frames" in str(err.value) and "\n" not in str(err.value)


def test_video_agents_need_frames(tmp_path):
    text = load_profile_text().replace("  num_frames: 9\n", "", 1)
    with pytest.raises(MoraError, match="num_frames and fps"):
        load_profile(_write(tmp_path, text))


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(MoraError, match="must be a mapping"):
        load_profile(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(MoraError, match="not valid YAML"):
        load_profile(_write(tmp_path, "a: [1, 2\n"))


def load_profile_text() -> str:
    from configs import PROFILES_DIR

    return (PROFILES_DIR / "tiny.yaml").read_text()
