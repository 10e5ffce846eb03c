"""A training round's candidate sampling, spread over workers.

The engine is the training config's ``sampling.engine``:

* ``inline``: the sampling tasks run in the round's own process, one prompt after the other;
* ``deployment``: one run of the ``sample-candidates`` deployment per batch of prompts, all
  created at once; the work pool's workers (one per GPU, ``--limit 1``) each take one as they
  are free. Results come back through Prefect's persisted results, and finished samples through
  the task cache, so workers on several machines need a shared result storage;
* ``task-workers``: one background task run per prompt (``.delay()``), taken by long-lived task
  worker processes (``mora worker``, one per GPU) that keep their models loaded from one round
  to the next (a process worker starts a new process, and loads again, for every flow run);
* ``dask``: the sampling tasks submitted to a Dask cluster through prefect-dask's task runner.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from configs import load_profile
from configs.sampling import SamplingSpec
from configs.training import TrainingConfig
from configs.errors import MoraError
from tasks.artifacts import RunContext
from tasks.candidates import CandidateSet, sample_candidates


class SampleJob(BaseModel, frozen=True):
    """One prompt's candidates to sample: its index in the round, its text, one seed each."""

    prompt_index: int
    prompt: str
    seeds: list[int]


# One task at a time: a pipeline is not thread-safe. A Dask run replaces this runner.
@flow(name="sample-candidates", task_runner=ThreadPoolTaskRunner(max_workers=1))
def sample_prompts(config: TrainingConfig, store: str, ctx: RunContext, jobs: list[SampleJob],
                   weights_key: str | None = None, refresh: bool = False) -> list[CandidateSet]:
    """A training round's candidate videos for a batch of prompts (the unit a worker takes)."""
    profile = load_profile(config.profile)
    futures = [sample_candidates.submit(profile, config, store, ctx, job.prompt_index,
                                        job.prompt, job.seeds, weights_key) for job in jobs]
    return [future.result() for future in futures]


def sample_all(cfg: TrainingConfig, store_url: str, ctx: RunContext, jobs: list[SampleJob],
               weights_key: str | None, refresh: bool = False) -> list[CandidateSet]:
    """Every job's candidates, in job order, sampled where the config's engine says."""
    spec = cfg.sampling
    if spec.engine == "deployment":
        return _on_deployment(spec, cfg, store_url, ctx, jobs, weights_key, refresh)
    if spec.engine == "task-workers":
        profile = load_profile(cfg.profile)
        futures = [sample_candidates.delay(profile, cfg, store_url, ctx, job.prompt_index,
                                           job.prompt, job.seeds, weights_key) for job in jobs]
        return [future.result(timeout=spec.timeout_s) for future in futures]
    if spec.engine == "dask":
        runner = _dask_runner(spec)
        return sample_prompts.with_options(task_runner=runner)(cfg, store_url, ctx, jobs,
                                                               weights_key, refresh)
    profile = load_profile(cfg.profile)
    return [sample_candidates(profile, cfg, store_url, ctx, job.prompt_index, job.prompt,
                              job.seeds, weights_key) for job in jobs]


def _on_deployment(spec: SamplingSpec, cfg: TrainingConfig, store_url: str, ctx: RunContext,
                   jobs: list[SampleJob], weights_key: str | None,
                   refresh: bool) -> list[CandidateSet]:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    batches = [jobs[i:i + spec.prompts_per_run] for i in range(0, len(jobs),
                                                              spec.prompts_per_run)]
    runs = [run_deployment(spec.deployment, timeout=0, parameters={
        "config": cfg.model_dump(mode="json"), "store": store_url,
        "ctx": ctx.model_dump(mode="json"), "weights_key": weights_key, "refresh": refresh,
        "jobs": [job.model_dump(mode="json") for job in batch]}) for batch in batches]
    deadline = time.monotonic() + spec.timeout_s
    results: list[CandidateSet] = []
    with get_client(sync_client=True) as client:
        for run in runs:
            while not (run := client.read_flow_run(run.id)).state.is_final():
                if time.monotonic() > deadline:
                    raise MoraError(f"sampling run {run.name} still {run.state.name} after "
                                    f"{spec.timeout_s} s")
                time.sleep(1)
            if not run.state.is_completed():
                raise MoraError(f"sampling run {run.name} ended {run.state.name}: "
                                f"{run.state.message or 'see its logs'}")
            results += run.state.result()
    return results


def _dask_runner(spec: SamplingSpec):
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise MoraError("sampling engine 'dask' needs prefect-dask: pip install "
                        "'mora-on-prefect[cluster]'") from None
    if spec.dask_address:
        return DaskTaskRunner(address=spec.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": spec.dask_workers,
                                          "threads_per_worker": 1})
