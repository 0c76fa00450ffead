"""Task runners: threads in this process, or a Dask or Ray cluster.

The flow is the same for every runner; only where shard tasks execute changes. What makes a
cluster run correct:

* tasks receive plain data (config, shard spec, store path); each worker process loads its own
  engines once (:func:`prefsynth.engines.get_engine`), so no model is ever pickled;
* every shard is written to the shard store, which must be a path every worker can reach
  (``store_dir`` on a shared filesystem) — Prefect's own result persistence is off;
* stages that run models ask the runner for ``gpus_per_task`` GPUs: Ray through
  ``remote_options(num_gpus=...)``, Dask through worker resources (start GPU workers with
  ``--resources GPU=1``).

``prefect-dask`` and ``prefect-ray`` are extras (``pip install -e '.[dask,ray]'``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from prefsynth.config import TaskRunnerConfig
from prefsynth.errors import PrefsynthError


def concurrent_model_tasks(config: TaskRunnerConfig) -> int:
    """How many shard tasks may compute on this machine at once: the thread pool's workers, or
    a local Dask/Ray cluster's worker processes. A remote cluster's workers are on other
    machines, so here it is 1. Each task's torch threads are the cores divided by this."""
    if config.kind == "thread":
        return config.max_workers
    return 1 if config.address else config.n_workers


def make_task_runner(config: TaskRunnerConfig) -> Any:
    if config.kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=config.max_workers)
    if config.kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise PrefsynthError("task_runner dask needs: pip install 'prefsynth[dask]'") from None
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        if config.address:
            return DaskTaskRunner(address=config.address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": config.n_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise PrefsynthError("task_runner ray needs: pip install 'prefsynth[ray]'") from None
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if config.address:
        return RayTaskRunner(address=config.address)
    return RayTaskRunner(
        init_kwargs={
            "num_cpus": config.n_workers,
            "include_dashboard": False,
            "configure_logging": False,
            "log_to_driver": False,
        }
    )


@contextlib.contextmanager
def stage_resources(config: TaskRunnerConfig, uses_models: bool) -> Iterator[None]:
    """Submit a model stage's tasks (``Stage.uses_models``) with a GPU request on the
    configured runner."""
    if not uses_models or config.gpus_per_task <= 0 or config.kind == "thread":
        yield
        return
    if config.kind == "ray":
        from prefect_ray.context import remote_options

        with remote_options(num_gpus=config.gpus_per_task):
            yield
        return
    import dask

    with dask.annotate(resources={"GPU": config.gpus_per_task}):
        yield
