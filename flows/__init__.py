"""Prefect flows and tasks: wiring, shards, retries and task runners. No model or method logic.

* :mod:`flows.plan` — every shard's content key, computed before anything runs;
* :mod:`flows.stages` — one Prefect task per stage, each over one shard;
* :mod:`flows.runners` — thread, Dask or Ray task runners and GPU requests per stage;
* :mod:`flows.build` — the build flow and ``run.json``;
* :mod:`flows.evaluate` — ``eval-annotators``: annotators and the vote against human labels;
* :mod:`flows.schedule` — scheduled rebuilds that publish and compare with the last release.
"""
