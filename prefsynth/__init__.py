"""prefsynth core: records, the run record, build config, shard store and file helpers.

Layering (dependencies point one way, never back; ``tests/test_layers.py`` checks it):

    interface   prefsynth.cli (the ``prefsynth`` command) and prefsynth.flows
        ->  prefsynth.generators / prefsynth.annotators / prefsynth.curation
        ->  prefsynth.engines
        ->  core: the modules of this package other than ``cli``

Core modules import nothing from the layers above. The CLI is the top layer even though it
lives in this package: it imports flows, curation and engines lazily inside its commands (so
``prefsynth --help`` stays fast).
"""

__version__ = "0.1.0"

#: The code version in every record's provenance and in shard keys; a release that changes
#: what a stage computes bumps ``__version__`` and so invalidates the shards it would change.
CODE_VERSION = f"prefsynth-{__version__}"
