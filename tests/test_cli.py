"""The `mora` command as a user runs it: a subprocess, its output, its exit code, its files. The
bad-input table runs in this process (tests/mora_cli.py): the same exit code and stderr, without
a Python start per row."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mora_cli import mora, run_cli

MORA = [sys.executable, "-m", "mora.cli"]


def run(*args, cwd=None, timeout=600, env=None):
    """``mora ARGS`` as a subprocess; ``env`` (e.g. the ``session_server_env`` fixture) replaces
    the test process's environment."""
    return subprocess.run([*MORA, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env or {**os.environ, "COLUMNS": "200"})


def test_help_is_fast_and_lists_commands():
    start = time.perf_counter()
    result = run("--help")
    assert result.returncode == 0
    assert "t2v" in result.stdout and "models" in result.stdout
    # Not a speed assertion: --help must not import torch/diffusers/prefect at all.
    probe = subprocess.run([sys.executable, "-c",
                            "import sys, mora.cli; print(sorted(m for m in ('torch', 'diffusers',"
                            " 'transformers', 'prefect', 'boto3') if m in sys.modules))"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("args, message", [
    (["t2v", ""], "error: prompt is empty"),
    (["t2v", "   "], "error: prompt is empty"),
    (["t2v", "a\x01b"], "error: prompt contains control characters"),
    (["t2v", "x" * 2001], "error: prompt is 2001 characters long"),
    (["t2v", "a cat", "--profile", "nope"], "error: unknown profile 'nope'"),
    (["t2v", "a cat", "--profile", "shapes"],
     "error: prompt 'a cat' is not a caption of the shapes world"),
    (["t2v", "a cat", "--segments", "0"], "error: --segments must be between 1 and 32"),
    (["t2v", "a cat", "--segments", "-3"], "error: --segments must be between 1 and 32"),
    (["t2v", "a cat", "--segments", "two"], "error: Invalid value for '--segments'"),
    (["t2v", "a cat", "--seed", "-1"], "error: seed must be an integer"),
    (["t2v", "a cat", "--out", "/no/such/folder/x.mp4"], "error: --out folder does not exist"),
    (["t2v", "a cat", "--out", "video.avi"], "error: --out must end in .mp4"),
    (["t2v", "a cat", "--store", "s3://"], "error: store URL 's3://' does not parse"),
    (["t2v", "a cat", "--store", "ftp://host/x"], "error: store URL 'ftp://host/x' does not parse"),
    (["t2v"], "error: Missing argument 'prompt'"),
    (["train", "--rounds", "0"], "error: --rounds must be between 1 and 100"),
    (["train", "--prompts", "0"], "error: --prompts must be at least 1"),
    (["train", "--candidates", "1"], "error: --candidates must be between 2 and 16"),
    (["train", "--config", "nope"], "error: unknown training config 'nope'"),
    (["train", "--name", "../x"], "error: --name must be lowercase letters"),
    (["train", "--store", "s3://"], "error: store URL 's3://' does not parse"),
    (["review", "pick", "nope", "1"], "error: 'nope' is not a flow run id"),
    (["review", "pick", "00000000-0000-0000-0000-000000000000", "0"],
     "error: candidate numbers start at 1"),
    (["nonsense"], "error: No such command 'nonsense'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, args, message):
    """In this process (tests/mora_cli.py): the same exit code and stderr as the command's, and
    an exception escaping ``main`` fails the test. The process boundary is covered below."""
    store = tmp_path / "store"
    if args[:1] in (["t2v"], ["train"]) and len(args) > 1 and "--store" not in args:
        args = [*args, "--store", str(store)]
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli(args)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), stderr
    assert "Traceback" not in stderr
    assert not store.exists() and not (tmp_path / "mora-store").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_out_path_that_is_a_file_parent(tmp_path):
    """Bad input as a user meets it: a process that exits 2 with one line on stderr."""
    (tmp_path / "afile").write_text("x")
    result = run("t2v", "a cat", "--out", str(tmp_path / "afile" / "v.mp4"), "--store",
                 str(tmp_path / "store"))
    assert result.returncode == 2 and result.stderr.startswith("error: --out folder does not exist")
    assert not (tmp_path / "store").exists()


@pytest.mark.integration
def test_t2v_writes_playable_mp4_and_names_it(tmp_path, tiny_zoo):
    out = tmp_path / "fox.mp4"
    result = run("t2v", "a red fox in fresh snow", "--segments", "2", "--out", str(out),
                 "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    import imageio.v3 as iio

    frames = iio.imread(out)
    assert frames.shape == (18, 64, 64, 3) and iio.immeta(out)["codec"] == "h264"
    lines = result.stdout.strip().splitlines()
    assert lines[-2].startswith(f"video: {out}") and "18 frames, 64x64 @ 8 fps" in lines[-2]
    key = lines[-1].split()[2]
    assert key.startswith("video/") and key.endswith(".mp4")
    assert (tmp_path / "store" / key).read_bytes() == out.read_bytes()


def test_models_list_and_build_tiny(tiny_zoo):
    built = run("models", "build-tiny")
    assert built.returncode == 0 and "tiny:svd" in built.stdout
    listed = run("models", "list")
    assert listed.returncode == 0
    assert "stabilityai/stable-video-diffusion-img2vid-xt" in listed.stdout
    assert "built" in listed.stdout and "missing" in listed.stdout


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_train_runs_a_round_and_names_its_outputs(tmp_path, tiny_zoo):
    import yaml

    from tests.test_training import SMALL

    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "prompts": 1}))
    result = mora("train", "--rounds", "1", "--config", str(config), "--candidates", "2",
                  "--store", str(tmp_path / "store"), cwd=tmp_path, session_server=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("train-r1: accepted 1/1, agreement ")
    assert "dataset rounds/train-r1/" in lines[0] and "weights checkpoints/" in lines[0]
    assert lines[1].startswith("plot: ") and lines[1].endswith(".png")
    assert (tmp_path / "store" / lines[1].split("/store/")[1]).is_file()
