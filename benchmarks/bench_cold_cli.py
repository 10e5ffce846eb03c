"""P7 and P10: a cold `mora t2v` as a user types it, against a plain diffusers script making the
same calls, each timed as a whole process, in pairs (plain, then mora), medians over ``--reps``.

    P7   `mora t2v … --segments 2` with the local server running (`mora server start`)
    P10  the same with a resident `mora worker` that already holds the profile's models, the
         command's GPU tasks handed to it (MORA_GPU_TASKS=task-workers)

The plain script loads the tiny SD3 and SVD pipelines from the model cache and makes the calls
`mora t2v` makes (first frame, then one clip per segment from the last frame), and writes an mp4.
Each repetition uses a fresh seed, so the task cache never short-cuts `mora`.

    .venv/bin/python benchmarks/bench_cold_cli.py --reps 4
Uses its own MORA_HOME server folder (the tiny models are linked in) and a free port. The server
logs the requests it answers with 503 (`PREFECT_API_LOG_RETRYABLE_ERRORS`: SQLite was busy, the
client retries after 2 s); their count per phase is printed. Set
`PREFECT_API_DATABASE_CONNECTION_URL` to run the server on PostgreSQL instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROMPT = "a red fox running through fresh snow, golden hour"

PLAIN = r'''
import sys, torch, imageio.v3 as iio, numpy as np
from diffusers import StableDiffusion3Pipeline, StableVideoDiffusionPipeline
home, seed, segments, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
t2i = StableDiffusion3Pipeline.from_pretrained(f"{home}/tiny/sd3", use_safetensors=True)
i2v = StableVideoDiffusionPipeline.from_pretrained(f"{home}/tiny/svd", use_safetensors=True)
g = lambda s: torch.Generator("cpu").manual_seed(s)
image = t2i(prompt=sys.argv[5], height=64, width=64, num_inference_steps=2, guidance_scale=2.0,
            generator=g(seed)).images[0]
frames = []
for k in range(segments):
    clip = i2v(image=image, height=64, width=64, num_frames=9, num_inference_steps=2,
               max_guidance_scale=2.0, fps=8, decode_chunk_size=9, generator=g(seed + 1 + 1000 * k),
               output_type="pil").frames[0]
    frames += clip if not frames else clip[1:]
    image = clip[-1]
iio.imwrite(out, np.stack([np.asarray(f) for f in frames]), fps=8, codec="libx264")
'''


def timed(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900,
                         stdin=subprocess.DEVNULL, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}… failed:\n{res.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--skip-p10", action="store_true")
    opts = parser.parse_args()

    from configs.settings import mora_home
    from tests.prefect_server import free_port

    models = mora_home()
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    home = work / "mora-home"
    home.mkdir()
    (home / "tiny").symlink_to(models / "tiny")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL",)}
    env.update(MORA_HOME=str(home), HF_HUB_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MORA_STORE=str(work / "store"), PREFECT_API_LOG_RETRYABLE_ERRORS="true")
    server_log = home / "server" / "server.log"

    def answered_503() -> int:
        text = server_log.read_text(errors="replace") if server_log.exists() else ""
        return text.count("Encountered retryable exception in request")
    mora = [sys.executable, "-m", "mora.cli"]
    port = str(free_port())
    subprocess.run([*mora, "server", "start", "--no-ui", "--port", port], env=env, check=True,
                   timeout=300)
    worker = None
    try:
        results: dict[str, list[float]] = {"plain": [], "P7": [], "P10": []}
        retries = {"P7": 0, "P10": 0}
        seed = int(time.time()) % 100000
        for rep in range(opts.reps):
            seed += 7
            results["plain"].append(timed([sys.executable, "-c", PLAIN, str(models), str(seed),
                                           str(opts.segments), str(work / f"plain-{rep}.mp4"),
                                           PROMPT], env))
            before = answered_503()
            results["P7"].append(timed([*mora, "t2v", PROMPT, "--segments", str(opts.segments),
                                        "--seed", str(seed)], env))
            retries["P7"] += answered_503() - before
            print(f"rep {rep + 1}: plain {results['plain'][-1]:.1f} s, mora t2v (server) "
                  f"{results['P7'][-1]:.1f} s", flush=True)
        if not opts.skip_p10:
            log = open(work / "worker.log", "wb")
            worker = subprocess.Popen([*mora, "worker"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
            resident = {**env, "MORA_GPU_TASKS": "task-workers"}
            timed([*mora, "t2v", PROMPT, "--segments", str(opts.segments), "--seed", "1"],
                  resident)  # loads the worker's models once
            for rep in range(opts.reps):
                seed += 7
                before = answered_503()
                results["P10"].append(timed([*mora, "t2v", PROMPT, "--segments",
                                             str(opts.segments), "--seed", str(seed)], resident))
                retries["P10"] += answered_503() - before
                print(f"rep {rep + 1}: mora t2v (server + resident worker) "
                      f"{results['P10'][-1]:.1f} s", flush=True)
        plain = statistics.median(results["plain"])
        print(f"\nplain diffusers script: median {plain:.2f} s  {results['plain']}")
        for name, goal in (("P7", 1.2), ("P10", 0.5)):
            if results[name]:
                value = statistics.median(results[name])
                print(f"{name}: median {value:.2f} s → {value / plain:.2f}× the plain script "
                      f"(goal ≤ {goal})  {[round(v, 1) for v in results[name]]}; "
                      f"{retries[name]} requests answered 503 in its {len(results[name])} runs")
        database = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL", "sqlite (default)")
        print(f"server database: {database.split('@')[-1]}")
        print(f"load average: {os.getloadavg()}")
        print(f"reproduce: {sys.executable} benchmarks/bench_cold_cli.py --reps {opts.reps} "
              f"--segments {opts.segments}")
    finally:
        if worker is not None:
            import signal

            os.killpg(worker.pid, signal.SIGINT)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        subprocess.run([*mora, "server", "stop"], env=env, timeout=60)


if __name__ == "__main__":
    main()
