"""Curation: turning annotated responses into pairs and pairs into a published dataset.

* :mod:`curation.pairs` — pair construction (best vs worst), never from ties or equal texts.
* :mod:`curation.dataset` — TRL conversational preference format, ``datasets`` on disk, Parquet.
* :mod:`curation.card` — the dataset card (README.md) generated from the run.
"""
