"""The `shapes` world: clips of one coloured shape moving on a plain background, with captions
from a small grammar. The one place where its vocabulary, grammar, edit instructions and
held-out combinations are written down (the renderer is configs/world/render.py; the measures
that read a clip back are metrics/world.py).

Caption grammar (every caption the world makes parses back to its scene)::

    caption     := "a " colour " " shape " " motion " on a " background " background"
    motion      := "standing still" | "moving " direction [" " pace]
    direction   := "left" | "right" | "up" | "down"
    pace        := "slowly" | "quickly"          (no pace word: the middle speed)
    instruction := "make it " colour | "make the background " background

Where a shape is: each clip's path is centred on the frame, give or take a few pixels
(configs/world/render.py ``JITTER``), so a caption also tells where its first frame's shape sits.

Held out: every (colour, shape) pair in :data:`HELD_OUT_PAIRS` never appears in training; the
held-out prompts are made of exactly those (e.g. no "yellow triangle" at all in training).
Plain Python: no numpy here.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Colours far apart in RGB, so that a measured colour names one of them without doubt.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "dark": (24, 24, 32),
    "light": (226, 226, 214),
    "grey": (128, 128, 128),
}
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
MOTIONS: tuple[str, ...] = (*DIRECTIONS, "still")
# Pixels per frame at 64x64 (a pace word, or none for the middle speed).
PACES: dict[str | None, float] = {"slowly": 1.0, None: 1.75, "quickly": 2.5}
# (dx, dy) per unit of speed, image coordinates (y grows downwards).
VELOCITY: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1),
                                        "down": (0, 1), "still": (0, 0)}
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("yellow", "triangle"), ("purple", "circle"), ("orange", "square")})

SIZE = 64  # frames are SIZE x SIZE
FPS = 8
FRAMES = (9, 17)  # a clip has between these many frames (inclusive)


@dataclass(frozen=True)
class Scene:
    """What one clip shows; ``caption`` says it in the grammar, :func:`parse` reads it back."""

    colour: str
    shape: str
    motion: str  # a direction or "still"
    background: str
    pace: str | None = None  # "slowly", "quickly" or None (the middle speed); still: None

    def __post_init__(self) -> None:
        for value, allowed, what in ((self.colour, COLOURS, "colour"), (self.shape, SHAPES, "shape"),
                                     (self.motion, MOTIONS, "motion"),
                                     (self.background, BACKGROUNDS, "background"),
                                     (self.pace, PACES, "pace")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r} (known: {', '.join(map(str, allowed))})")
        if self.motion == "still" and self.pace is not None:
            raise ValueError("a shape standing still has no pace")

    @property
    def speed(self) -> float:
        """Pixels per frame."""
        return 0.0 if self.motion == "still" else PACES[self.pace]

    @property
    def held_out(self) -> bool:
        return (self.colour, self.shape) in HELD_OUT_PAIRS

    @property
    def caption(self) -> str:
        motion = "standing still" if self.motion == "still" else (
            f"moving {self.motion}" + (f" {self.pace}" if self.pace else ""))
        return f"a {self.colour} {self.shape} {motion} on a {self.background} background"


_CAPTION_RE = re.compile(
    r"an? (?P<colour>\w+) (?P<shape>\w+) (?:standing still|moving (?P<direction>\w+)"
    r"(?: (?P<pace>slowly|quickly))?) on an? (?P<background>\w+) background")
_INSTRUCTION_RE = re.compile(r"make (?:it|the (?P<what>background)) (?P<value>\w+)")


def parse(caption: str) -> Scene | None:
    """The scene a caption of the grammar describes; None for any other text. Case, surrounding
    space and a final full stop are ignored, and so is text around it (an enhanced prompt's
    additions), as long as one caption of the grammar is in it."""
    match = _CAPTION_RE.search(caption.strip().lower())
    if match is None:
        return None
    try:
        return Scene(colour=match["colour"], shape=match["shape"],
                     motion=match["direction"] or "still", background=match["background"],
                     pace=match["pace"])
    except ValueError:
        return None


def instruction_for(colour: str | None = None, background: str | None = None) -> str:
    """An edit instruction of the grammar: recolour the shape, or the background."""
    if (colour is None) == (background is None):
        raise ValueError("give a colour or a background")
    return f"make it {colour}" if colour else f"make the background {background}"


def apply_instruction(scene: Scene, instruction: str) -> Scene | None:
    """The scene after an edit instruction of the grammar; None when it is not one."""
    match = _INSTRUCTION_RE.fullmatch(instruction.strip().lower().rstrip("."))
    if match is None:
        return None
    try:
        if match["what"]:
            return replace(scene, background=match["value"])
        return replace(scene, colour=match["value"])
    except ValueError:
        return None


def all_scenes() -> list[Scene]:
    """Every scene of the world, in a fixed order."""
    scenes = []
    for colour in COLOURS:
        for shape in SHAPES:
            for background in BACKGROUNDS:
                scenes.append(Scene(colour, shape, "still", background))
                for direction in DIRECTIONS:
                    for pace in PACES:
                        scenes.append(Scene(colour, shape, direction, background, pace))
    return scenes


def sample_scenes(count: int, seed: int, split: str = "train") -> list[Scene]:
    """``count`` scenes drawn (with replacement) from one split: ``train`` never shows a
    held-out (colour, shape) pair, ``held_out`` shows only those. Same seed, same scenes."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be train or held_out, got {split!r}")
    pool = [s for s in all_scenes() if s.held_out == (split == "held_out")]
    rng = random.Random(f"mora-shapes-{split}-{seed}")
    return [rng.choice(pool) for _ in range(count)]


def connection_pairs(count: int, seed: int, split: str = "train") -> list[tuple[Scene, Scene]]:
    """Pairs of scenes for the connector (clip A, then clip B: another shape, colour or motion
    on the same background, so that a transition has something to do)."""
    rng = random.Random(f"mora-shapes-pairs-{split}-{seed}")
    scenes = [s for s in all_scenes() if s.held_out == (split == "held_out")]
    pairs = []
    for first in sample_scenes(count, seed, split):
        pool = [s for s in scenes if s.background == first.background and s != first]
        pairs.append((first, rng.choice(pool)))
    return pairs
