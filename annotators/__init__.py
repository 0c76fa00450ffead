"""Preference annotators, one module per signal, each returning Annotation rows with raw evidence.

* :mod:`annotators.cdr` — CDR density ratio of a strong over a weak LLM (METHODS §3).

Every annotator returns one row per response (pointwise) with a status: ``ok``, ``abstain``
(the annotator has no opinion, e.g. an empty response) or ``error`` (with the reason). A
failure on one row never drops the row or fails the shard.
"""
