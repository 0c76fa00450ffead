"""Preference annotators, one module per signal, each returning Annotation rows with raw evidence.

* :mod:`.base` — items (a response and its conversation), verdicts, Annotation rows;
* :mod:`.pointwise` — runs a pointwise annotator by name, for builds and evaluations;
* :mod:`.cdr` — CDR density ratio of a strong over a weak LLM (METHODS §3);
* :mod:`.flr` — FLR follow-up likelihood (METHODS §4);
* :mod:`.reward_models` — reward models (METHODS §6);
* :mod:`.judge` — pairwise LLM judge, both orders, length rule, canaries (METHODS §5).

The vote that combines annotators is curation (:mod:`prefsynth.curation.voting`).

Every pointwise annotator returns one row per response (the judge one per pair) with a status:
``ok``, ``abstain`` (no opinion, e.g. an empty response or an unparsable verdict) or ``error``
(with the reason). A failure on one row never drops the row or fails the shard.
"""

if __name__ != "prefsynth.annotators":  # the folder is importable from the repository root
    raise ImportError(
        f"import prefsynth.annotators, not {__name__}: the package lives in the prefsynth namespace"
    )
