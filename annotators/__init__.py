"""Preference annotators, one module per signal, each returning Annotation rows with raw evidence.

* :mod:`.base` — the pointwise-annotator protocol and registry, items, verdicts, rows;
* :mod:`.cdr` — CDR density ratio of a strong over a weak LLM (docs/methods.md §7);
* :mod:`.flr` — FLR follow-up likelihood (docs/methods.md §8);
* :mod:`.reward_models` — reward models (docs/methods.md §10);
* :mod:`.judge` — pairwise LLM judge, both orders, length rule, canaries (docs/methods.md §9).

The vote that combines annotators is curation (:mod:`prefsynth.curation.voting`).

Every pointwise annotator returns one row per response (the judge one per pair) with a status:
``ok``, ``abstain`` (no opinion, e.g. an empty response or an unparsable verdict) or ``error``
(with the reason). A failure on one row never drops the row or fails the shard.
"""

if __name__ != "prefsynth.annotators":  # the folder is importable from the repository root
    raise ImportError(
        f"import prefsynth.annotators, not {__name__}: the package lives in the prefsynth namespace"
    )
