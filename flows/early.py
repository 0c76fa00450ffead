"""Shards computed before their stage starts, on a core the build would otherwise leave idle.

The instructions stage ends with its slowest shard: by default Instruct-SkillMix's (about
55 s on one thread of a 2-core CPU, three rounds of attempts), while PiKa's shard is done
after 10 s and the second core waits. The shards downstream of a finished instruction shard
(its responses, their annotations, response checks, pairs and judge verdicts) depend only on
that shard and on which of its instructions curation keeps, so they can run in that wait.

Curation is the one stage in between that reads every instruction shard: deduplication keeps
the first of near-identical instructions across all of them. The early chain therefore
curates the finished shards alone and takes those decisions as its guess. A shard's key holds
the instruction ids curation kept from it (``Responses.identity``), so when the build's own
curation agrees, the build plans exactly the keys computed early and uses those shards; when
it does not (an early instruction is a duplicate of a later one), the keys differ and the
build computes its own. Either way the dataset is the one a build without early shards makes.
What the guess costs when it fails: the early shards' compute and their files in the store,
which no key names (the guessed curation shard is always one of these).

Bit-for-bit equality also needs equal arithmetic: a bfloat16 forward pass gives other numbers
on another thread count. An early shard runs on the share of the cores its stage would give it
(cores // workers), so early shards run only when every later stage has at least as many
shards as the runner has workers (at least ``workers`` instruction shards), and only on CPU
(on a GPU, calls to one engine run one at a time: an early shard would slow the last one).

One early shard runs at a time, on a thread of the build's process (the thread task runner
only). Once the instructions stage ends the chain starts no new shard; a stage that plans a
key the chain is computing waits for it instead of computing it twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from prefsynth.engines.device import resolve_device, task_share
from prefsynth.flows.pipeline import (
    ShardResult,
    ShardSpec,
    Stage,
    StageContext,
    plan_stage,
    run_shard,
)
from prefsynth.flows.runners import concurrent_model_tasks

log = logging.getLogger(__name__)

GUESSED = "curation"  # the stage that reads every instruction shard, which the chain guesses


def chain(stages: Sequence[Stage]) -> list[Stage]:
    """The stages an early chain runs: the guessed curation, then each later stage whose keyed
    inputs are per instruction shard, up to the first that reads every shard (the vote)."""
    names = [stage.name for stage in stages]
    if GUESSED not in names:
        return []
    out = [stages[names.index(GUESSED)]]
    for stage in stages[names.index(GUESSED) + 1 :]:
        if any(inp.keyed and not inp.each for inp in stage.inputs):
            break
        out.append(stage)
    return out


def possible(ctx: StageContext, stages: Sequence[Stage], instruction_shards: int) -> bool:
    """Whether to compute early shards: ``task_runner.early_shards`` is on, and they would
    equal the build's own: the thread runner, models on CPU, and at least as many instruction
    shards as workers (see the module docstring)."""
    runner = ctx.config.task_runner
    if not runner.early_shards or runner.kind != "thread":
        return False
    if instruction_shards < concurrent_model_tasks(runner):
        return False
    devices = {
        resolve_device(getattr(spec, "device", "cpu"))
        for stage in chain(stages)
        for spec in stage.models(ctx.config).values()
    }
    return len(chain(stages)) > 1 and devices <= {"cpu"}


class EarlyShards:
    """The early chain of one build: :meth:`start` it once with the finished instruction
    shards, :meth:`stop` it when the instructions stage ends, :meth:`claim` a planned shard."""

    def __init__(self, ctx: StageContext, stages: Sequence[Stage]) -> None:
        self._ctx = ctx
        self._stages = chain(stages)
        self._share = concurrent_model_tasks(ctx.config.task_runner)
        self._done: dict[str, ShardResult] = {}
        self._current: str | None = None
        self._stopped = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self, finished: list[ShardSpec]) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(finished,), name="prefsynth-early-shards", daemon=True
        )
        self._thread.start()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def chain_stages(self) -> list[Stage]:
        return list(self._stages)

    def stop(self) -> None:
        """Start no new shard (the one being computed finishes)."""
        with self._changed:
            self._stopped = True

    def join(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join()

    def claim(self, key: str) -> ShardResult | None:
        """The result of shard ``key`` if the chain computed it, waiting while it computes it;
        ``None`` if the chain did not (or failed to), and never will: the caller computes it."""
        with self._changed:
            while self._current == key:
                self._changed.wait()
            return self._done.get(key)

    def _next(self, key: str) -> bool:
        with self._changed:
            if self._stopped:
                return False
            self._current = key
            return True

    def _finish(self, key: str, result: ShardResult | None) -> None:
        with self._changed:
            if result is not None:
                self._done[key] = result
            self._current = None
            self._changed.notify_all()

    def holds(self, key: str) -> bool:
        """Whether the chain computed shard ``key`` or is computing it."""
        with self._changed:
            return key in self._done or key == self._current

    def _run(self, finished: list[ShardSpec]) -> None:
        planned: dict[str, list[ShardSpec]] = {"instructions": finished}
        try:
            with task_share(self._share):
                for stage in self._stages:
                    planned[stage.name] = plan_stage(stage, self._ctx, planned)
                    for spec in planned[stage.name]:
                        if not self._next(spec.key):
                            return
                        result = None
                        try:
                            result = run_shard(stage, self._ctx, spec)
                            result.early = not result.reused
                        finally:
                            self._finish(spec.key, result)
        except Exception as e:  # the build computes the shard itself, and reports any error
            log.debug("early shards stopped: %s: %s", type(e).__name__, e)


__all__ = ["EarlyShards", "chain", "possible"]
