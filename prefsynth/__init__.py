"""prefsynth core: records, build config, shard store and the CLI.

Layering (dependencies point one way, never back):

    flows  ->  generators / annotators / curation  ->  engines  ->  prefsynth (this package)

This package imports nothing from the layers above it, except the CLI, which is the entry
point and imports ``flows`` lazily inside its commands.
"""

__version__ = "0.1.0"

#: Enters every shard key: a release that changes what a stage computes bumps the version.
CODE_VERSION = f"prefsynth-{__version__}"
