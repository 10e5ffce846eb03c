"""Bad input, everywhere: every command, flow and store URL refuses it up front.

Each CLI case must give one `error: …` line on stderr naming the problem, exit code 2, no
traceback, and leave the store, the working folder and MORA_HOME exactly as they were. The
commands run in-process (``mora.cli.main``, what the console script calls) so that the table
stays fast; tests/test_cli.py and tests/test_cli_sops.py run a sample as subprocesses.

Flows called from Python get their parameters validated by Prefect (pydantic) before a run
starts: ``Flow.validate_parameters`` is that step; a few cases also call the flow itself.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from storage import media
from tests.mora_cli import run_cli
from tests.test_cli_sops import write_inputs

ZERO_RUN = "00000000-0000-0000-0000-000000000000"
HUGE = "x" * 100_000
NOT_FOUND = "error: {what} '{name}' does not exist"

# ---- the inputs every case can name (made once, in the module's working folder) ------------


def _extra_inputs(folder: Path) -> None:
    rng = np.random.default_rng(1)
    clip = (folder / "clip.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(clip[: len(clip) // 2])
    (folder / "text.mp4").write_text("just some text, renamed\n" * 20)
    (folder / "text.png").write_text("just some text, renamed\n" * 20)
    (folder / "notes.txt").write_text("a text file")
    (folder / "one-frame.mp4").write_bytes(
        media.encode_mp4(rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8), 8.0))
    (folder / "other-size.mp4").write_bytes(
        media.encode_mp4(rng.integers(0, 256, (3, 24, 40, 3), dtype=np.uint8), 12.0))
    from PIL import Image

    Image.new("RGB", (media.MAX_SIDE + 1, 16)).save(folder / "too-wide.png")
    import imageio.v3 as iio  # more frames than any input may have (encode_mp4 refuses them)

    (folder / "too-long.mp4").write_bytes(iio.imwrite(
        "<bytes>", np.zeros((media.MAX_FRAMES + 50, 8, 8, 3), np.uint8), extension=".mp4",
        fps=1000, codec="libx264", macro_block_size=1))
    (folder / "absurd.yaml").write_text((Path("configs/profiles/tiny.yaml").read_text())
                                        .replace("steps: 2\n", "steps: 100000\n", 1))
    (folder / "huge-frames.yaml").write_text(Path("configs/profiles/tiny.yaml").read_text()
                                             .replace("height: 64", "height: 100000", 1))
    (folder / "remote-code.yaml").write_text(Path("configs/profiles/tiny.yaml").read_text()
                                             + "trust_remote_code: true\n")
    (folder / "not-yaml.yaml").write_text("text_to_image: [unclosed\n")
    (folder / "tower-on-sd3.yaml").write_text(Path("configs/profiles/tiny.yaml").read_text()
                                              .replace('  model: "tiny:sd3"\n', '  model: "tiny:sd3"\n'
                                                       '  text_tower: {model: "tiny:svd"}\n', 1))
    (folder / "two-targets.yaml").write_text(Path("configs/training/tiny.yaml").read_text()
                                             .replace("  target: image_to_video\n",
                                                      "  target: image_to_video\n"
                                                      "  targets: [text_to_image]\n", 1))
    (folder / "unreadable.png").write_bytes((folder / "ok.png").read_bytes())
    (folder / "unreadable.png").chmod(0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    write_inputs(folder)
    _extra_inputs(folder)
    # A store that already holds an artifact: every case must leave it as it is.
    from storage import Provenance, open_store

    store = open_store(str(folder / "store"))
    key = store.put_bytes(store.new_key("input", ".mp4"), b"not a video",
                          Provenance(kind="input", sop="test"))
    return folder, key


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``path``: relative name → (size, mtime_ns); {} if none."""
    if not path.exists():
        return {}
    found = {".": (0, path.stat().st_mtime_ns)}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        found[str(p.relative_to(path))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return found


def mora_home() -> Path:
    from configs.settings import mora_home as home

    return home()


def assert_refused(argv: list[str], message: str, watched: list[Path]) -> None:
    before = {str(p): tree(p) for p in watched}
    code, stdout, stderr = run_cli(argv)
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(message), stderr[-2000:]
    assert "Traceback" not in stderr and stdout == ""
    assert {str(p): tree(p) for p in watched} == before, "bad input changed files"


# ---- the table: (argv, the start of the one error line) -------------------------------------
# A case without --store gets the module's store; "{key}" is the key the store holds.

STORES = [  # every store problem, given to each SOP command below
    ("s3://", "error: store URL 's3://' does not parse"),
    ("s3://Bad_Bucket!/x", "error: store URL 's3://Bad_Bucket!/x' does not parse: bucket name"),
    ("ftp://host/x", "error: store URL 'ftp://host/x' does not parse: unknown scheme"),
    ("s3://bucket/../x", "error: store URL 's3://bucket/../x' does not parse: prefix has"),
    ("s3://AKIAKEY:s3cr3t@bucket/x", "error: store URL 's3://***@bucket/x' does not parse: "
                                      "credentials do not belong"),
    ("notes.txt", "error: store "),  # a file, not a folder
    ("notes.txt/sub", "error: store "),  # under a file
]

T2V = [
    (["t2v", ""], "error: prompt is empty"),
    (["t2v", " \t "], "error: prompt is empty"),
    (["t2v", HUGE], "error: prompt is 100000 characters long (at most 2000)"),
    (["t2v", "a\x01cat"], "error: prompt contains control characters"),
    (["t2v", "a \x1b[31mred\x1b[0m cat"], "error: prompt contains control characters"),
    (["t2v", "a cat", "--segments", "0"], "error: --segments must be between 1 and 32"),
    (["t2v", "a cat", "--segments", "1000000"], "error: --segments must be between 1 and 32"),
    (["t2v", "a cat", "--segments", "1.5"], "error: Invalid value for '--segments'"),
    (["t2v", "a cat", "--seed", "-1"], "error: seed must be an integer in [0, 2**63)"),
    (["t2v", "a cat", "--seed", str(2**64)], "error: seed must be an integer in [0, 2**63)"),
    (["t2v", "a cat", "--profile", "nope"], "error: unknown profile 'nope'"),
    (["t2v", "a cat", "--profile", "absurd.yaml"], "error: profile absurd.yaml: "
                                                   "text_to_image.steps: Input should be less"),
    (["t2v", "a cat", "--profile", "huge-frames.yaml"], "error: profile huge-frames.yaml: "
                                                        "text_to_image.height: Input should be"),
    (["t2v", "a cat", "--profile", "remote-code.yaml"], "error: profile remote-code.yaml: "
                                                        "trust_remote_code: unknown key"),
    (["t2v", "a cat", "--profile", "not-yaml.yaml"], "error: profile not-yaml.yaml is not valid"),
    (["t2v", "a cat", "--profile", "tower-on-sd3.yaml"], "error: profile tower-on-sd3.yaml: "
                                                         "text_to_image: Value error, text_tower "
                                                         "applies to StableVideoDiffusionPipeline"),
    (["t2v", "a cat", "--review", "later"], "error: --review must be auto or ask"),
    (["t2v", "a cat", "--out", "clip.mov"], "error: --out must end in .mp4"),
    (["t2v", "a cat", "--out", "folder.mp4"], "error: --out is a folder"),
    (["t2v", "a cat", "--out", "notes.txt/x.mp4"], "error: --out folder does not exist"),
    (["t2v", "a cat", "--profile", "sd3-svd"],
     "error: model 'stabilityai/stable-diffusion-3-medium-diffusers' is not in the local Hugging "
     "Face cache and HF_HUB_OFFLINE is set; fetch it on a connected machine with "
     "`huggingface-cli download stabilityai/stable-diffusion-3-medium-diffusers`"),
    (["t2v", "a cat", "--bogus"], "error: No such option: --bogus"),
    (["t2v", "a cat", "--weights", "r1"], "error: weights must be round:<round id>, "
                                          "store://<key>, latest or base, got 'r1'"),
    (["t2v", "a cat", "--weights", "round:nope-r1"], "error: no training round 'nope-r1' in "
                                                     "store"),
    (["t2v", "a cat", "--weights", "latest"], "error: no trained weights in store"),
    (["t2v", "a cat", "--weights", "store://checkpoints/none.safetensors"],
     "error: no checkpoint store://checkpoints/none.safetensors in store"),
    (["t2v", "a cat", "--weights", "store://../x.safetensors"], "error: weights "
                                                                "store://../x.safetensors: has a"),
]

I2V = [
    (["i2v", "missing.png"], NOT_FOUND.format(what="image", name="missing.png")),
    (["i2v", "empty.png"], "error: image 'empty.png' is empty (0 bytes)"),
    (["i2v", "folder.png"], "error: image 'folder.png' is a folder, not a file"),
    (["i2v", "broken.png"], "error: image 'broken.png' is a broken symbolic link"),
    (["i2v", "text.png"], "error: image 'text.png' is not a readable image"),
    (["i2v", "garbage.png"], "error: image 'garbage.png' is not a readable image"),
    (["i2v", "small.png"], "error: image 'small.png' is 4x4; at least 8x8 is needed"),
    (["i2v", "too-wide.png"], f"error: image 'too-wide.png' is {media.MAX_SIDE + 1}x16; at most"),
    (["i2v", "notes.txt"], "error: image 'notes.txt' is not an image file (suffix '.txt'"),
    (["i2v", "clip.mp4"], "error: image 'clip.mp4' is not an image file (suffix '.mp4'"),
    (["i2v", "unreadable.png"], "error: cannot read image 'unreadable.png': Permission denied"),
    (["i2v", "x" * 5000 + ".png"], "error: cannot read image"),
    (["i2v", "store://image/none.png"], "error: image 'store://image/none.png' is not in store"),
    (["i2v", "store://../etc/passwd"], "error: image 'store://../etc/passwd' is not a valid store "
                                      "key: has a '..' path segment"),
    (["i2v", "store:///etc/passwd"], "error: image 'store:///etc/passwd' is not a valid store key: "
                                    "is absolute"),
    (["i2v", "store://a\\b.png"], "error: image 'store://a\\b.png' is not a valid store key: "
                                 "contains a backslash"),
    (["i2v", "store://{key}"], "error: image 'store://{key}' is not an image file"),
    (["i2v", "ok.png", ""], "error: prompt is empty"),
    (["i2v", "ok.png", HUGE], "error: prompt is 100000 characters long"),
    (["i2v", "ok.png", "a\x07b"], "error: prompt contains control characters"),
    (["i2v", "ok.png", "--seed", "-5"], "error: seed must be an integer"),
    (["i2v", "ok.png", "--profile", "nope"], "error: unknown profile 'nope'"),
    (["i2v", "ok.png", "--profile", "sdxl-svd"], "error: model 'stabilityai/stable-diffusion-xl-"
                                                 "base-1.0' is not in the local Hugging Face"),
    (["i2v", "ok.png", "--weights", "store://{key}"], "error: store://{key} is not fine-tuned "
                                                      "weights (it is a input artifact)"),
    (["i2v", "ok.png", "--weights", "round:nope"], "error: no training round 'nope' in store"),
]

EXTEND = [
    (["extend", "missing.mp4"], NOT_FOUND.format(what="video", name="missing.mp4")),
    (["extend", "empty.mp4"], "error: video 'empty.mp4' is empty (0 bytes)"),
    (["extend", "truncated.mp4"], "error: video 'truncated.mp4' is not a readable video"),
    (["extend", "text.mp4"], "error: video 'text.mp4' is not a readable video"),
    (["extend", "no-frames.mp4"], "error: video 'no-frames.mp4' is not a readable video"),
    (["extend", "one-frame.mp4"], "error: video 'one-frame.mp4' has 1 frame; a video needs at "
                                  "least 2"),
    (["extend", "too-long.mp4"], f"error: video 'too-long.mp4' has about {media.MAX_FRAMES + 50} "
                                 f"frames; at most {media.MAX_FRAMES}"),
    (["extend", "notes.txt"], "error: video 'notes.txt' is not a video file (suffix '.txt'"),
    (["extend", "ok.png"], "error: video 'ok.png' is not a video file (suffix '.png'"),
    (["extend", "store://{key}"], "error: video 'store://{key}' is not a readable video"),
    (["extend", "store://video/../../x.mp4"], "error: video 'store://video/../../x.mp4' is not a "
                                              "valid store key"),
    (["extend", "clip.mp4", "\x00"], "error: prompt contains control characters"),
    (["extend", "clip.mp4", HUGE], "error: prompt is 100000 characters long"),
    (["extend", "clip.mp4", "--seed", "-1"], "error: seed must be an integer"),
    (["extend", "clip.mp4", "--profile", "wan"], "error: model 'stabilityai/stable-diffusion-3-"
                                                 "medium-diffusers' is not in the local"),
]

EDIT = [
    (["edit", "clip.mp4", ""], "error: instruction is empty"),
    (["edit", "clip.mp4", HUGE], "error: instruction is 100000 characters long"),
    (["edit", "clip.mp4", "make\x1bit snow"], "error: instruction contains control characters"),
    (["edit", "missing.mp4", "make it snow"], NOT_FOUND.format(what="video", name="missing.mp4")),
    (["edit", "truncated.mp4", "make it snow"], "error: video 'truncated.mp4' is not a readable"),
    (["edit", "text.mp4", "make it snow"], "error: video 'text.mp4' is not a readable video"),
    (["edit", "one-frame.mp4", "make it snow"], "error: video 'one-frame.mp4' has 1 frame"),
    (["edit", "ok.png", "make it snow"], "error: video 'ok.png' is not a video file"),
    (["edit", "clip.mp4", "make it snow", "--seed", "x"], "error: Invalid value for '--seed'"),
    (["edit", "clip.mp4", "make it snow", "--profile", "absurd.yaml"], "error: profile absurd"),
]

CONNECT = [
    (["connect", "missing.mp4", "clip.mp4"], NOT_FOUND.format(what="video a", name="missing.mp4")),
    (["connect", "clip.mp4", "missing.mp4"], NOT_FOUND.format(what="video b", name="missing.mp4")),
    (["connect", "truncated.mp4", "clip.mp4"], "error: video a 'truncated.mp4' is not a readable"),
    (["connect", "clip.mp4", "text.mp4"], "error: video b 'text.mp4' is not a readable video"),
    (["connect", "clip.mp4", "one-frame.mp4"], "error: video b 'one-frame.mp4' has 1 frame"),
    (["connect", "no-frames.mp4", "clip.mp4"], "error: video a 'no-frames.mp4' is not a readable"),
    (["connect", "clip.mp4", "ok.png"], "error: video b 'ok.png' is not a video file"),
    (["connect", "clip.mp4", "too-long.mp4"], "error: video b 'too-long.mp4' has about"),
    (["connect", "clip.mp4", "store://../x.mp4"], "error: video b 'store://../x.mp4' is not a "
                                                  "valid store key"),
    (["connect", "clip.mp4", "other-size.mp4", "--seed", "-1"], "error: seed must be an integer"),
    (["connect", "clip.mp4", "other-size.mp4", "--profile", "sd3-svd"], "error: model "),
    (["connect", "clip.mp4", "clip.mp4", "extra"], "error: Got unexpected extra argument"),
]

DIGITAL_WORLD = [
    (["digital-world"], "error: give a PROMPT or --video VIDEO"),
    (["digital-world", "a city", "--video", "clip.mp4"], "error: give a PROMPT or --video VIDEO, "
                                                         "not both"),
    (["digital-world", ""], "error: prompt is empty"),
    (["digital-world", HUGE], "error: prompt is 100000 characters long"),
    (["digital-world", "a\x02city"], "error: prompt contains control characters"),
    (["digital-world", "--video", "missing.mp4"], NOT_FOUND.format(what="video",
                                                                   name="missing.mp4")),
    (["digital-world", "--video", "truncated.mp4"], "error: video 'truncated.mp4' is not a "
                                                    "readable"),
    (["digital-world", "--video", "one-frame.mp4"], "error: video 'one-frame.mp4' has 1 frame"),
    (["digital-world", "--video", "text.mp4"], "error: video 'text.mp4' is not a readable"),
    (["digital-world", "a city", "--seed", "-2"], "error: seed must be an integer"),
    (["digital-world", "a city", "--profile", "huge-frames.yaml"], "error: profile huge-frames"),
]

TRAIN = [
    (["train", "--rounds", "0"], "error: --rounds must be between 1 and 100"),
    (["train", "--rounds", "101"], "error: --rounds must be between 1 and 100"),
    (["train", "--prompts", "0"], "error: --prompts must be at least 1"),
    (["train", "--prompts", "100000"], "error: training config tiny: Input should be less than"),
    (["train", "--candidates", "1"], "error: --candidates must be between 2 and 16"),
    (["train", "--candidates", "17"], "error: --candidates must be between 2 and 16"),
    (["train", "--config", "nope"], "error: unknown training config 'nope'"),
    (["train", "--config", "not-yaml.yaml"], "error: training config not-yaml.yaml is not valid"),
    (["train", "--config", "two-targets.yaml"], "error: training config two-targets.yaml"),
    (["train", "--name", "../x"], "error: --name must be lowercase letters"),
    (["train", "--name", "/abs"], "error: --name must be lowercase letters"),
    (["train", "--name", "a\\b"], "error: --name must be lowercase letters"),
    (["train", "--name", "x" * 300], "error: --name must be lowercase letters"),
    (["train", "--name", "Upper"], "error: --name must be lowercase letters"),
    # 36 characters: the flow would refuse its rounds' ids (<name>-r100 is over 40)
    (["train", "--name", "x" * 36], "error: --name must be lowercase letters, digits, '-' or '_' "
                                    "(at most 35)"),
    (["train", "--seed", "-1"], "error: seed must be an integer"),
    (["train", "--review", "never"], "error: --review must be auto or ask"),
    (["train", "--config", "paper"], "error: model 'stabilityai/stable-diffusion-3-medium-"
                                     "diffusers' is not in the local Hugging Face cache"),
]

WORKER = [
    (["worker"], "error: mora worker needs a Prefect server: set PREFECT_API_URL"),
    (["worker", "--limit", "0"], "error: --limit must be between 1 and 64"),
    (["worker", "--limit", "65"], "error: --limit must be between 1 and 64"),
    (["worker", "--limit", "x"], "error: Invalid value for '--limit'"),
]

ABLATE = [
    (["ablate", "--variants", "full,sideways"], "error: --variants must name some of full"),
    (["ablate", "--variants", "full,full"], "error: --variants names a variant twice"),
    (["ablate", "--variants", ""], "error: --variants must name some of"),
    (["ablate", "--rounds", "0"], "error: --rounds must be between 1 and 100"),
    (["ablate", "--prompts", "0"], "error: --prompts must be at least 1"),
    (["ablate", "--candidates", "99"], "error: --candidates must be between 2 and 16"),
    (["ablate", "--name", "x" * 21], "error: --name must be lowercase letters, digits, '-' or "
                                     "'_' (at most 20)"),
    (["ablate", "--name", "../x"], "error: --name must be lowercase letters"),
    (["ablate", "--config", "nope"], "error: unknown training config 'nope'"),
    (["ablate", "--config", "paper"], "error: model 'stabilityai/stable-diffusion-3-medium-"
                                      "diffusers' is not in the local Hugging Face cache"),
    (["ablate", "--seed", "-1"], "error: seed must be an integer"),
    (["ablate", "--review", "maybe"], "error: --review must be auto or ask"),
]

EVAL = [
    (["eval", "missing.mp4"], NOT_FOUND.format(what="video", name="missing.mp4")),
    (["eval", "clip.mp4", "truncated.mp4"], "error: video 'truncated.mp4' is not a readable"),
    (["eval", "text.mp4"], "error: video 'text.mp4' is not a readable video"),
    (["eval", "one-frame.mp4"], "error: video 'one-frame.mp4' has 1 frame"),
    (["eval", "ok.png"], "error: video 'ok.png' is not a video file"),
    (["eval", "clip.mp4", "--prompt", ""], "error: prompt is empty"),
    (["eval", "clip.mp4", "--prompt", HUGE], "error: prompt is 100000 characters long"),
    (["eval", "clip.mp4", "--prompt", "a\x01b"], "error: prompt contains control characters"),
    (["eval", "clip.mp4", "--format", "xml"], "error: --format must be table, json or csv"),
    (["eval", "clip.mp4", "--task", "nope"], "error: --task must be one of"),
    (["eval", *["clip.mp4"] * 1001], "error: at most 1000 videos at a time, got 1001"),
    (["eval", "store://../x.mp4"], "error: video 'store://../x.mp4' is not a valid store key"),
    (["eval"], "error: give VIDEOs to evaluate or --weights"),
    (["eval", "clip.mp4", "--weights", "latest"], "error: give VIDEOs to evaluate or --weights, "
                                                  "not both"),
    (["eval", "--weights", "latest"], "error: no trained weights in store"),
    (["eval", "--weights", "round:x", "--seeds", "0"], "error: --seeds must be between 1 and 32"),
    (["eval", "--weights", "nope"], "error: weights must be round:<round id>"),
    (["eval", "--weights", "latest", "--config", "nope"], "error: unknown training config 'nope'"),
]

REVIEW = [
    (["review", "approve", "nope"], "error: 'nope' is not a flow run id"),
    (["review", "regenerate", "../x"], "error: '../x' is not a flow run id"),
    (["review", "show", "x" * 1000], "error: '" + "x" * 1000 + "' is not a flow run id"),
    (["review", "reject", ""], "error: '' is not a flow run id"),
    (["review", "edit", ZERO_RUN, ""], "error: instruction is empty"),
    (["review", "edit", ZERO_RUN, HUGE], "error: instruction is 100000 characters long"),
    (["review", "edit", ZERO_RUN, "a\x01b"], "error: instruction contains control characters"),
    (["review", "pick", ZERO_RUN, "0"], "error: candidate numbers start at 1"),
    (["review", "pick", ZERO_RUN, str(10**30)], "error: candidate numbers start at 1"),
    (["review", "pick", ZERO_RUN, "two"], "error: Invalid value for 'candidate'"),
    (["review", "approve", ZERO_RUN], "error: `mora review` needs the Prefect server"),
    (["review", "list"], "error: `mora review` needs the Prefect server"),
    (["review", "nope"], "error: No such command 'nope'"),
]

SERVER = [  # each refused before anything is started or written
    (["server", "start", "--host", "0.0.0.0"], "error: --host 0.0.0.0 serves beyond this "
                                               "machine"),
    (["server", "start", "--host", "::"], "error: --host :: serves beyond this machine"),
    (["server", "start", "--port", "0"], "error: --port must be between 1 and 65535"),
    (["server", "start", "--port", "70000"], "error: --port must be between 1 and 65535"),
    (["server", "start", "--port", "x"], "error: Invalid value for '--port'"),
    (["server", "nope"], "error: No such command 'nope'"),
]

MODELS = [
    (["models", "nonsense"], "error: No such command 'nonsense'"),
    (["models", "list", "extra"], "error: Got unexpected extra argument"),
    (["models", "build-tiny", "--force", "yes"], "error: Got unexpected extra argument"),
    (["models", "build-tiny", "--bogus"], "error: No such option: --bogus"),
    (["models", "list", "--store", "ftp://host/x"], "error: store URL 'ftp://host/x' does not "
                                                   "parse"),
    (["models", "build-random"], "error: Missing argument 'profile'"),
    (["models", "build-random", "nope"], "error: unknown profile 'nope'"),
    (["models", "build-random", "tiny"], "error: no published architecture recorded for 'tiny:sd3'"),
    (["models", "build-random", "sd3-svd", "--dtype", "int8"], "error: dtype must be one of"),
    (["models", "build-random", "sd3-svd", "--max-gb", "0"], "error: max-gb must be a positive"),
]

SOP_COMMANDS = {  # a valid call of each SOP command, to give the bad stores to
    "t2v": ["t2v", "a cat"], "i2v": ["i2v", "ok.png"], "extend": ["extend", "clip.mp4"],
    "edit": ["edit", "clip.mp4", "make it snow"], "connect": ["connect", "clip.mp4", "clip.mp4"],
    "digital-world": ["digital-world", "a city"], "train": ["train"], "eval": ["eval", "clip.mp4"],
    "ablate": ["ablate"],
}

TABLE = {
    "t2v": T2V, "i2v": I2V, "extend": EXTEND, "edit": EDIT, "connect": CONNECT,
    "digital-world": DIGITAL_WORLD, "train": TRAIN, "ablate": ABLATE, "eval": EVAL,
    "review": REVIEW, "models": MODELS, "worker": WORKER, "server": SERVER,
}
for _command, _argv in SOP_COMMANDS.items():
    TABLE[_command] = TABLE[_command] + [([*_argv, "--store", url], message)
                                         for url, message in STORES]

CASES = [pytest.param(argv, message, id=f"{command}-{i}")
         for command, cases in TABLE.items() for i, (argv, message) in enumerate(cases)]


def case_counts() -> dict[str, int]:
    return {command: len(cases) for command, cases in TABLE.items()}


@pytest.mark.parametrize("argv, message", CASES)
def test_cli_bad_input_is_one_line_exit_2_and_changes_nothing(argv, message, workdir,
                                                              monkeypatch):
    folder, key = workdir
    if any("unreadable" in a for a in argv) and os.geteuid() == 0:
        pytest.skip("root reads a chmod 000 file")
    monkeypatch.chdir(folder)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    argv = [a.replace("{key}", key) for a in argv]
    message = message.replace("{key}", key)
    if argv[0] not in ("review", "models", "worker", "server") and "--store" not in argv and len(argv) > 1:
        argv = [*argv, "--store", "store"]
    assert_refused(argv, message, [folder, mora_home()])


def test_every_entry_point_has_a_real_table():
    counts = case_counts()
    for command in ("t2v", "i2v", "extend", "edit", "connect", "digital-world"):
        assert counts[command] >= 8, (command, counts[command])
    assert sum(counts.values()) >= 150


def test_mora_home_that_is_a_file(workdir, monkeypatch):
    folder, _ = workdir
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MORA_HOME", str(folder / "notes.txt"))
    for argv in (["models", "build-tiny"], ["t2v", "a cat", "--store", "store"]):
        assert_refused(argv, f"error: MORA_HOME {folder / 'notes.txt'} cannot be written",
                       [folder])


# ---- S3: a bucket that does not exist, credentials the endpoint rejects ---------------------


def s3_objects() -> dict[str, str]:
    import boto3

    s3 = boto3.session.Session().client("s3")
    found = {}
    for bucket in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            found.update({f"{bucket['Name']}/{o['Key']}": o["ETag"]
                          for o in page.get("Contents", [])})
    return found


@pytest.mark.parametrize("argv", [c for c in SOP_COMMANDS.values()], ids=list(SOP_COMMANDS))
def test_missing_bucket(argv, s3_server, workdir, monkeypatch):
    folder, _ = workdir
    monkeypatch.chdir(folder)
    before = s3_objects()
    assert_refused([*argv, "--store", "s3://no-such-bucket-mora/x"],
                   "error: bucket 'no-such-bucket-mora' does not exist at http://127.0.0.1:",
                   [folder, mora_home()])
    assert s3_objects() == before


class moto_auth:  # noqa: N801 - used as a context manager
    """moto's server checks credentials (IAM) while inside: any key it did not issue is bad."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def _set(self, count: str) -> None:
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth",
                                         data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def __enter__(self):
        self._set("0")

    def __exit__(self, *exc):
        self._set("inf")


@pytest.mark.parametrize("argv", [SOP_COMMANDS["t2v"], SOP_COMMANDS["connect"],
                                  SOP_COMMANDS["eval"]], ids=["t2v", "connect", "eval"])
def test_bad_credentials(argv, s3_server, s3_store_url, workdir, monkeypatch):
    folder, _ = workdir
    monkeypatch.chdir(folder)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAMORABADKEY000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    before = s3_objects()
    with moto_auth(s3_server):
        code, stdout, stderr = run_cli([*argv, "--store", s3_store_url])
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error: S3 credentials rejected or access denied by "
                             "http://127.0.0.1:")
    assert "not-the-secret" not in stderr and "AKIAMORABADKEY" not in stderr
    assert s3_objects() == before


# ---- flows called from Python: Prefect validates the parameters before the run --------------


def _flows():
    from flows.connect_videos import connect_videos
    from flows.digital_world import digital_world
    from flows.edit_video import edit_video
    from flows.evaluate import evaluate
    from flows.extend_video import extend_video
    from flows.image_to_video import image_to_video
    from flows.text_to_video import text_to_video
    from flows.ablations import ablations
    from flows.training import train, training_round

    return {f.name: f for f in (text_to_video, image_to_video, extend_video, edit_video,
                                connect_videos, digital_world, evaluate, train, training_round,
                                ablations)}


GOOD = {  # the smallest valid call of each flow
    "text-to-video": {"prompt": "a cat"},
    "image-to-video": {"image": "ok.png"},
    "extend-video": {"video": "clip.mp4"},
    "edit-video": {"video": "clip.mp4", "instruction": "make it snow"},
    "connect-videos": {"video_a": "clip.mp4", "video_b": "clip.mp4"},
    "digital-world": {"prompt": "a city"},
    "evaluate": {"videos": ["clip.mp4"]},
    "train": {},
    "training-round": {"round_id": "r1"},
    "ablations": {},
}

COMMON_BAD = [  # for every SOP flow: (parameter, value, the start of pydantic's complaint)
    ("seed", -1, "seed: Input should be greater than or equal to 0"),
    ("seed", 2**64, "seed: Input should be less than 9223372036854775808"),
    ("seed", "x", "seed: Input should be a valid integer"),
    ("profile", "nope", "profile: Value error, unknown profile 'nope'"),
    ("profile", "", "profile: String should have at least 1 character"),
    ("profile", "absurd.yaml", "profile: Value error, profile absurd.yaml: text_to_image.steps"),
    ("store", "s3://", "store: Value error, store URL 's3://' does not parse"),
    ("store", "s3://Bad_Bucket!", "store: Value error, store URL 's3://Bad_Bucket!' does not"),
    ("store", "ftp://x", "store: Value error, store URL 'ftp://x' does not parse"),
    ("store", "s3://bucket/../x", "store: Value error, store URL 's3://bucket/../x' does not"),
    ("store", "s3://k:s3cr3t@bucket/x", "store: Value error, store URL 's3://***@bucket/x'"),
    ("review", {"mode": "later"}, "review.mode: Input should be 'auto' or 'ask'"),
    ("review", {"max_tries": 0}, "review.max_tries: Input should be greater than or equal to 1"),
    ("review", {"timeout_s": 10**9}, "review.timeout_s: Input should be less than or equal"),
    ("weights", "r1", "weights: String should match pattern"),
    ("weights", "round:../x", "weights: String should match pattern"),
]

FLOW_BAD = {
    "text-to-video": [
        ("prompt", "", "prompt: String should have at least 1 character"),
        ("prompt", "   ", "prompt: Value error, is blank"),
        ("prompt", HUGE, "prompt: String should have at most 2000 characters"),
        ("prompt", "a\x00b", "prompt: Value error, contains control characters"),
        ("prompt", None, "prompt: Input should be a valid string"),
        ("segments", 0, "segments: Input should be greater than or equal to 1"),
        ("segments", 10**6, "segments: Input should be less than or equal to 32"),
    ],
    "image-to-video": [
        ("image", "", "image: String should have at least 1 character"),
        ("image", "x" * 5000, "image: String should have at most 4096 characters"),
        ("image", "a\x00b.png", "image: Value error, contains control characters"),
        ("prompt", "\x1b[2J", "prompt: Value error, contains control characters"),
        ("edit_instruction", "", "edit_instruction: String should have at least 1 character"),
    ],
    "extend-video": [
        ("video", "", "video: String should have at least 1 character"),
        ("video", "clip.mp4\n", "video: Value error, contains control characters"),
        ("segments", 33, "segments: Input should be less than or equal to 32"),
        ("drift", "maybe", "drift: Input should be 'warn' or 'fail'"),
        ("drift_tolerance", -1, "drift_tolerance: Input should be greater than or equal to 0"),
        ("drift_tolerance", 1e9, "drift_tolerance: Input should be less than or equal to 255"),
    ],
    "edit-video": [
        ("instruction", "", "instruction: String should have at least 1 character"),
        ("instruction", HUGE, "instruction: String should have at most 2000 characters"),
        ("instruction", " \n ", "instruction: Value error, is blank"),
        ("video", None, "video: Input should be a valid string"),
    ],
    "connect-videos": [
        ("video_a", "", "video_a: String should have at least 1 character"),
        ("video_b", "b\x7f.mp4", "video_b: Value error, contains control characters"),
        ("prompt", "", "prompt: String should have at least 1 character"),
    ],
    "digital-world": [
        ("prompt", "", "prompt: String should have at least 1 character"),
        ("prompt", HUGE, "prompt: String should have at most 2000 characters"),
        ("video", "", "video: String should have at least 1 character"),
    ],
    "evaluate": [
        ("videos", [], "videos: List should have at least 1 item"),
        ("videos", ["clip.mp4"] * 1001, "videos: List should have at most 1000 items"),
        ("videos", [""], "videos.0: String should have at least 1 character"),
        ("videos", "clip.mp4", "videos: Input should be a valid list"),
        ("task", "nope", "task: Input should be 't2v', 'i2v', 'extend', 'edit', 'connect'"),
        ("prompt", "a\x01", "prompt: Value error, contains control characters"),
        ("store", "s3://", "store: Value error, store URL 's3://' does not parse"),
        ("store", "ftp://x", "store: Value error, store URL 'ftp://x' does not parse"),
    ],
    "train": [
        ("rounds", 0, "rounds: Input should be greater than or equal to 1"),
        ("rounds", 10**6, "rounds: Input should be less than or equal to 100"),
        ("name", "../x", "name: String should match pattern"),
        ("name", "/abs", "name: String should match pattern"),
        ("name", "a\\b", "name: String should match pattern"),
        ("name", "a\x00b", "name: String should match pattern"),
        ("name", "x" * 300, "name: String should match pattern"),
        ("name", "x" * 36, "name: String should match pattern"),
        ("prompts", 0, "prompts: Input should be greater than or equal to 1"),
        ("candidates", 17, "candidates: Input should be less than or equal to 16"),
        ("seed", -1, "seed: Input should be greater than or equal to 0"),
    ],
    "training-round": [
        ("round_id", "../r1", "round_id: String should match pattern"),
        ("round_id", "", "round_id: String should match pattern"),
        ("round_id", "r1/../../x", "round_id: String should match pattern"),
        ("round_id", "C:\\r1", "round_id: String should match pattern"),
        ("round_id", "r" * 41, "round_id: String should match pattern"),
        ("seed", -1, "seed: Input should be greater than or equal to 0"),
        ("modulation", "sometimes", "modulation: Input should be 'special_token', 'random'"),
        ("draws", "x" * 81, "draws: String should have at most 80 characters"),
    ],
    "ablations": [
        ("variants", [], "variants: List should have at least 1 item"),
        ("variants", [{"name": "../x", "label": "x"}], "variants.0.name: String should match"),
        ("variants", [{"name": "x", "label": "x", "modulation": "maybe"}],
         "variants.0.modulation: Input should be 'special_token'"),
        ("variants", [{"name": "x", "label": "x", "extra": 1}],
         "variants.0.extra: Extra inputs are not permitted"),
        ("rounds", 0, "rounds: Input should be greater than or equal to 1"),
        ("name", "x" * 21, "name: String should match pattern"),
        ("eval_prompts", [], "eval_prompts: List should have at least 1 item"),
        ("candidates", 1, "candidates: Input should be greater than or equal to 2"),
    ],
}
SOP_FLOWS = ("text-to-video", "image-to-video", "extend-video", "edit-video", "connect-videos",
             "digital-world")
for _name in SOP_FLOWS:
    FLOW_BAD[_name] = FLOW_BAD[_name] + COMMON_BAD

FLOW_CASES = [pytest.param(name, param, value, message, id=f"{name}-{param}-{i}")
              for name, cases in FLOW_BAD.items()
              for i, (param, value, message) in enumerate(cases)]


@pytest.mark.parametrize("name", list(GOOD))
def test_flow_good_parameters_validate(name, workdir, monkeypatch):
    monkeypatch.chdir(workdir[0])
    _flows()[name].validate_parameters(GOOD[name])


@pytest.mark.parametrize("name, param, value, message", FLOW_CASES)
def test_flow_bad_parameter_is_refused_before_the_run(name, param, value, message, workdir,
                                                      monkeypatch):
    from prefect.exceptions import ParameterTypeError

    monkeypatch.chdir(workdir[0])
    before = tree(workdir[0])
    with pytest.raises(ParameterTypeError) as raised:
        _flows()[name].validate_parameters({**GOOD[name], param: value})
    problems = str(raised.value).splitlines()[1:]
    assert any(line.strip().startswith(f"- {message}") for line in problems), str(raised.value)
    assert "s3cr3t" not in str(raised.value)
    assert tree(workdir[0]) == before


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("name, params", [
    ("text-to-video", {"prompt": "a\x01cat"}),
    ("extend-video", {"video": "clip.mp4", "segments": 0}),
    ("connect-videos", {"video_a": "clip.mp4", "video_b": "clip.mp4", "store": "ftp://x"}),
    ("evaluate", {"videos": []}),
])
def test_calling_a_flow_with_a_bad_parameter_raises_before_any_work(name, params, workdir,
                                                                    monkeypatch):
    from prefect.exceptions import ParameterTypeError

    folder, _ = workdir
    monkeypatch.chdir(folder)
    before = tree(folder), tree(mora_home())
    with pytest.raises(ParameterTypeError):
        _flows()[name](**params, **({} if "store" in params else {"store": "store"}))
    assert (tree(folder), tree(mora_home())) == before


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("params, message", [
    ({}, "digital world takes a prompt or a video, exactly one of them"),
    ({"prompt": "a city", "video": "clip.mp4"}, "digital world takes a prompt or a video"),
    ({"video": "missing.mp4"}, "video 'missing.mp4' does not exist"),
])
def test_digital_world_checks_in_the_flow_before_any_model(params, message, workdir,
                                                           monkeypatch):
    from configs.errors import MoraError

    folder, _ = workdir
    monkeypatch.chdir(folder)
    before = tree(folder)
    with pytest.raises(MoraError, match=message):
        _flows()["digital-world"](**params, store="store")
    assert tree(folder) == before


def test_every_run_name_makes_valid_round_ids():
    """The longest names `train` and `ablate` take still name valid rounds (the drift the
    CLI once had: it took a --name whose <name>-r100 round id the flow refused)."""
    from pydantic import TypeAdapter

    from configs.ablations import VARIANT_NAME_CHARS, AblationVariant
    from flows.params import (ABLATION_NAME_CHARS, RUN_NAME_CHARS, AblationName, RoundId,
                              RunName)

    name = TypeAdapter(RunName).validate_python("x" * RUN_NAME_CHARS)
    TypeAdapter(RoundId).validate_python(f"{name}-r100")
    ablation = TypeAdapter(AblationName).validate_python("y" * ABLATION_NAME_CHARS)
    variant = AblationVariant(name="z" * VARIANT_NAME_CHARS, label="longest")
    TypeAdapter(RunName).validate_python(f"{ablation}-{variant.name}")


# ---- the store URL parser --------------------------------------------------------------------

STORE_URLS = [
    ("", "empty"),
    ("   ", "empty"),
    ("s3://", "no bucket name"),
    ("s3:bucket/x", "write S3 stores as s3://bucket/prefix"),
    ("s3://Bad_Bucket!", "bucket name 'Bad_Bucket!' is invalid"),
    ("s3://ab", "bucket name 'ab' is invalid"),
    ("s3://" + "b" * 64, "is invalid (3-63 characters"),
    ("s3://192.168.0.1/x", "looks like an IP address"),
    ("s3://xn--bucket/x", "reserved prefix 'xn--'"),
    ("s3://bucket:9000/x", "no port in an s3:// URL"),
    ("s3://key:s3cr3t@bucket/x", "credentials do not belong in the store URL"),
    ("s3://bucket/../x", "prefix has an empty, '.' or '..' path segment"),
    ("s3://bucket/a//b", "prefix has an empty, '.' or '..' path segment"),
    ("s3://bucket/a\\b", "prefix contains a backslash"),
    ("s3://bucket/" + "p" * 200, "prefix is too long"),
    ("s3://bucket/x?versionId=1", "query strings and fragments are not supported"),
    ("s3://bucket/x#frag", "query strings and fragments are not supported"),
    ("ftp://x", "unknown scheme 'ftp://'"),
    ("http://example.com/store", "unknown scheme 'http://'"),
    ("file://host/x", "a file URL needs an absolute path"),
    ("file:relative/x", "a file URL needs an absolute path"),
    ("a\x00b", "contains a NUL character"),
    ("store\n", "contains a control character"),
]


@pytest.mark.parametrize("url, problem", STORE_URLS)
def test_store_url_parser_refuses(url, problem, tmp_path, monkeypatch):
    from configs.errors import MoraError
    from storage import open_store

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MoraError) as raised:
        open_store(url)
    message = str(raised.value)
    assert "does not parse" in message and problem in message and "\n" not in message
    assert "s3cr3t" not in message
    assert list(tmp_path.iterdir()) == []


def test_store_url_parser_takes_good_urls(tmp_path):
    from storage.factory import parse_store_url

    assert parse_store_url("s3://my-bucket/a/b") == ("s3", {"bucket": "my-bucket", "prefix": "a/b"})
    assert parse_store_url(f"file://{tmp_path}") == ("local", {"root": str(tmp_path)})
    assert parse_store_url(str(tmp_path / uuid.uuid4().hex))[0] == "local"
