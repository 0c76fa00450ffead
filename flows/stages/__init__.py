"""The build's stages, one module each; importing this package registers them all.

Each module holds a stage's whole declaration: the stages it reads, its record type, what its
shard keys depend on, and its ``run`` (see :mod:`prefsynth.flows.pipeline`). The build runs
each stage after the stages it reads: instructions, curation, responses, annotations, gate,
pairs, judge, vote. Follow one record's journey by reading the modules in that order.
"""

from prefsynth.flows.stages import (  # noqa: F401 - imported to register
    annotations,
    curation,
    gate,
    instructions,
    judge,
    pairs,
    responses,
    vote,
)
