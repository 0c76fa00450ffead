"""Preference annotators, one module per signal, each returning Annotation rows with raw evidence.

* :mod:`annotators.base` — items (a response and its conversation), verdicts, Annotation rows;
* :mod:`annotators.pointwise` — runs a pointwise annotator by name, for builds and evaluations;
* :mod:`annotators.cdr` — CDR density ratio of a strong over a weak LLM (METHODS §3);
* :mod:`annotators.flr` — FLR follow-up likelihood (METHODS §4);
* :mod:`annotators.reward_models` — reward models (METHODS §6);
* :mod:`annotators.judge` — pairwise LLM judge, both orders, length rule, canaries (METHODS §5);
* :mod:`annotators.voting` — standardised margins, mu, sigma, wco, uwo (METHODS §6).

Every pointwise annotator returns one row per response (the judge one per pair) with a status:
``ok``, ``abstain`` (no opinion, e.g. an empty response or an unparsable verdict) or ``error``
(with the reason). A failure on one row never drops the row or fails the shard.
"""
