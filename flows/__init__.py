"""Prefect flows and tasks: wiring, shards, retries and task runners. No model or method logic.

* :mod:`.pipeline` — what a stage declares, how any stage is planned (its shard keys) and run
  (one Prefect task for every shard of every stage);
* :mod:`.stages` — the seven stage declarations, one module each, in build order;
* :mod:`.runners` — thread, Dask or Ray task runners and GPU requests per stage;
* :mod:`.build` — the build flow and its run record (``run.json``);
* :mod:`.artifacts` — audit and evaluation reports as Prefect artifacts;
* :mod:`.evaluate` — ``eval-annotators``: annotators and the vote against human labels;
* :mod:`.schedule` — scheduled rebuilds that publish and compare with the last release.
"""

if __name__ != "prefsynth.flows":  # the folder is importable from the repository root
    raise ImportError(
        f"import prefsynth.flows, not {__name__}: the package lives in the prefsynth namespace"
    )
