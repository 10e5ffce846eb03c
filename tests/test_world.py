"""The `shapes` world (configs/world/) and the measures that read it back (metrics/world.py):
the grammar parses what it writes, the splits keep the held-out pairs out of training, a clip
renders the same bytes every time, and reading a rendered clip recovers its scene."""

from __future__ import annotations

import numpy as np
import pytest

from configs.world import (HELD_OUT_PAIRS, Scene, all_scenes, apply_instruction,
                           connection_pairs, instruction_for, parse, sample_scenes)
from configs.world.render import render, render_pair
from metrics.world import LOOK, MOVE, adherence, read_clip


def test_every_caption_parses_back_to_its_scene():
    scenes = all_scenes()
    assert len(scenes) == 6 * 3 * 3 * (1 + 4 * 3)
    assert all(parse(s.caption) == s for s in scenes)
    assert parse("A red circle moving left quickly on a dark background, cinematic, 4k.") == \
        Scene("red", "circle", "left", "dark", "quickly")
    for text in ("a red fox running through fresh snow", "a pink circle standing still on a "
                 "dark background", "a red circle moving sideways on a dark background", ""):
        assert parse(text) is None


def test_edit_instructions():
    scene = Scene("red", "circle", "left", "dark")
    assert apply_instruction(scene, instruction_for(colour="blue")) == \
        Scene("blue", "circle", "left", "dark")
    assert apply_instruction(scene, "Make the background light.") == \
        Scene("red", "circle", "left", "light")
    assert apply_instruction(scene, "make it sparkle") is None
    with pytest.raises(ValueError):
        instruction_for()


def test_splits_keep_the_held_out_pairs_out_of_training():
    train = sample_scenes(500, seed=1)
    held = sample_scenes(200, seed=1, split="held_out")
    assert not any((s.colour, s.shape) in HELD_OUT_PAIRS for s in train)
    assert all((s.colour, s.shape) in HELD_OUT_PAIRS for s in held)
    assert {(s.colour, s.shape) for s in held} == set(HELD_OUT_PAIRS)
    assert sample_scenes(20, seed=3) == sample_scenes(20, seed=3) != sample_scenes(20, seed=4)
    for first, second in connection_pairs(30, seed=2):
        assert first != second and first.background == second.background
        assert not first.held_out and not second.held_out


def test_rendering_is_deterministic_and_stays_in_frame():
    scene = Scene("blue", "triangle", "right", "light", "quickly")
    clip = render(scene, seed=5, frames=17)
    assert clip.shape == (17, 64, 64, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, render(scene, seed=5, frames=17))
    assert not np.array_equal(clip, render(scene, seed=6, frames=17))
    background = np.array((226, 226, 214), dtype=np.uint8)
    for frame in clip:  # the whole shape in every frame: the borders are background
        for edge in (frame[0], frame[-1], frame[:, 0], frame[:, -1]):
            assert (edge == background).all()
    with pytest.raises(ValueError, match="frames must be between 9 and 17"):
        render(scene, frames=30)


@pytest.mark.parametrize("frames, every", [(9, 1), (17, 7)])
def test_reading_a_rendered_clip_recovers_its_scene(frames, every):
    scenes = all_scenes()[::every]
    wrong = [s for i, s in enumerate(scenes)
             if read_clip(render(s, seed=i, frames=frames)).scene() != s]
    assert wrong == [], [(s.caption, read_clip(render(s, seed=0, frames=frames)))
                         for s in wrong[:3]]


def test_the_judges_rank_an_obeying_clip_above_a_disobeying_one():
    caption = "a red circle moving left on a dark background"
    obeying = render(parse(caption), seed=1)
    for judge in (LOOK, MOVE):
        assert adherence(caption, obeying, judge) == 1.0
        for other in ("a blue circle moving left on a dark background",
                      "a red square moving left on a dark background",
                      "a red circle moving up on a dark background",
                      "a red circle moving left on a light background"):
            assert adherence(caption, render(parse(other), seed=1), judge) < 1.0
    noise = np.random.default_rng(0).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    assert adherence(caption, noise) < 0.5
    assert adherence("a red fox", obeying) is None


def test_the_two_judges_weigh_differently_and_can_disagree():
    caption = "a red circle moving left on a dark background"
    right_look = render(parse("a red circle moving up on a dark background"), seed=1)
    right_move = render(parse("a blue square moving left on a dark background"), seed=1)
    assert adherence(caption, right_look, LOOK) > adherence(caption, right_move, LOOK)
    assert adherence(caption, right_look, MOVE) < adherence(caption, right_move, MOVE)


def test_pairs_render_two_clips():
    first, second = connection_pairs(1, seed=0)[0]
    a, b = render_pair(first, second, seed=3)
    assert read_clip(a).scene() == first and read_clip(b).scene() == second


def test_world_judges_rank_by_adherence_and_refuse_other_prompts():
    from agents.judges import make_judge
    from configs.errors import MoraError
    from configs.judges import JudgeSpec

    caption = "a green square moving down slowly on a grey background"
    candidates = [render(parse(c), seed=2) for c in (
        "a green circle moving down slowly on a grey background",   # wrong shape
        caption,                                                   # obeys
        "a red square moving up slowly on a grey background")]      # wrong colour and motion
    judges = [make_judge(JudgeSpec(name=w, backend="world", world_weighting=w))
              for w in ("look", "move")]
    for judge in judges:
        judgement = judge.rank(candidates, 8.0, caption, criterion_id=7)
        assert judgement.ranking == [1, 0, 2] and judgement.best == 1
        assert judgement.scores[1] == 1.0
    with pytest.raises(MoraError, match="reads captions of the shapes world"):
        judges[0].rank(candidates, 8.0, "a red fox running through fresh snow")
    with pytest.raises(ValueError, match="world_weighting"):
        JudgeSpec(name="x", backend="world")
    with pytest.raises(ValueError, match="world_weighting"):
        JudgeSpec(name="x", backend="metrics", weights={"dynamic_degree": 1.0},
                  world_weighting="look")


@pytest.mark.usefixtures("prefect_server")
def test_eval_prints_shapes_adherence_and_a_wrong_colour_scores_lower(tmp_path):
    """`mora eval VIDEO --prompt CAPTION`: a prompt of the world's grammar adds this world's
    adherence (kind "world") to the records; through the mp4's lossy encoding too."""
    import json

    from storage import media
    from tests.mora_cli import run_cli

    caption = "a blue circle moving right on a light background"
    files = {}
    for name, text in (("obeys", caption),
                       ("red", "a red circle moving right on a light background")):
        files[name] = tmp_path / f"{name}.mp4"
        files[name].write_bytes(media.encode_mp4(render(parse(text), seed=4), 8.0))
    code, out, err = run_cli(["eval", str(files["obeys"]), str(files["red"]), "--prompt",
                              caption, "--format", "json", "--store", str(tmp_path / "store")],
                             session_server=True)
    assert code == 0, err
    world = {r["video"].rsplit("/", 1)[-1]: r for r in json.loads(out)
             if r["metric"] == "shapes_adherence"}
    assert {r["kind"] for r in world.values()} == {"world"}
    assert world["obeys.mp4"]["value"] == 1.0 > world["red.mp4"]["value"]
    code, out, _ = run_cli(["eval", str(files["obeys"]), "--prompt", "a red fox", "--format",
                            "json", "--store", str(tmp_path / "store")], session_server=True)
    assert code == 0 and "shapes_adherence" not in out  # not a caption of the world
