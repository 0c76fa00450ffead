"""Prefect flows and tasks: wiring, shards, retries and task runners. No model or method logic.

* :mod:`flows.plan` — every shard's content key, computed before anything runs;
* :mod:`flows.stages` — one Prefect task per stage, each over one shard;
* :mod:`flows.build` — the build flow and ``run.json``.
"""
