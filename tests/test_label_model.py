"""The ``label_model`` aggregate (docs/methods.md §12.4): reliabilities learned from agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prefsynth.curation.filtering import vote_and_filter
from prefsynth.curation.label_model import MIN_SHARED_PAIRS, LabelModelVote
from prefsynth.curation.voting import MeanVote, aggregate_for

from prefsynth.config import FilterConfig
from prefsynth.records import Pair

PLANTED = {"cdr": 0.9, "flr": 0.75, "judge": 0.6}


def _synthetic(
    n: int, accuracies: dict[str, float], seed: int
) -> tuple[list[dict[str, float]], np.ndarray]:
    """Votes with planted accuracies on a hidden truth (+1: first better); each margin is the
    vote times a random size, so only the sign carries the label, as in a real build."""
    rng = np.random.default_rng(seed)
    truth = rng.choice([-1, 1], size=n)
    margins = [
        {
            name: float(t if rng.random() < acc else -t) * float(rng.uniform(0.1, 3.0))
            for name, acc in accuracies.items()
        }
        for t in truth
    ]
    return margins, truth


def _fit(margins: list[dict[str, float]]) -> tuple[LabelModelVote, dict]:
    aggregate = aggregate_for(FilterConfig(aggregate="label_model"))
    assert isinstance(aggregate, LabelModelVote)
    return aggregate, aggregate.fit(margins)


@pytest.fixture(scope="module")
def planted() -> tuple[LabelModelVote, dict, list[dict[str, float]], np.ndarray]:
    margins, truth = _synthetic(2000, PLANTED, seed=0)
    aggregate, figures = _fit(margins)
    return aggregate, figures, margins, truth


def test_recovers_planted_accuracies(planted) -> None:
    """Tolerance: the sample's own accuracies differ from the planted ones by sampling noise
    (standard error <= 0.011 at n = 2000), so the estimate is checked against the empirical
    accuracy within 0.04 (the fit's own error, about 0.02 here, twice over) and against the
    planted value within 0.05; the planted values are 0.15 apart, so the order must hold too."""
    _, figures, margins, truth = planted
    lm = figures["label_model"]
    assert lm["fitted"] and lm["library"] == "snorkel LabelModel"
    estimated = lm["annotator_accuracy"]
    assert set(estimated) == set(PLANTED)
    for name, acc in PLANTED.items():
        empirical = float(
            np.mean([np.sign(m[name]) == t for m, t in zip(margins, truth, strict=True)])
        )
        assert estimated[name] == pytest.approx(empirical, abs=0.04), name
        assert estimated[name] == pytest.approx(acc, abs=0.05), name
    assert estimated["cdr"] > estimated["flr"] > estimated["judge"]
    # and the posterior labels the hidden truth about as well as the best annotator, or better
    mus = [planted[0].vote(m).mu for m in margins]
    assert np.mean(np.sign(mus) == truth) >= 0.9


def test_follows_the_reliable_annotator_when_they_disagree(planted) -> None:
    aggregate = planted[0]
    split = aggregate.vote({"cdr": 1.0, "flr": -1.0, "judge": -1.0})
    assert split is not None and split.mu > 0  # the majority says "second"; cdr is trusted
    assert split.n_voters == 3 and split.n_agree == 1
    unanimous = aggregate.vote({"cdr": 1.0, "flr": 1.0, "judge": 1.0})
    assert unanimous is not None and unanimous.mu > split.mu
    weak_pair = aggregate.vote({"cdr": -1.0, "flr": 1.0, "judge": 1.0})
    assert weak_pair is not None and weak_pair.mu < 0
    for v in (split, unanimous, weak_pair):
        assert -1 <= v.mu <= 1 and v.sigma == pytest.approx(math.sqrt(1 - v.mu**2))


def test_swapping_a_pair_negates_mu_and_the_fit_ignores_orientation() -> None:
    """In a build every pair is oriented (chosen first); the doubled fit must not learn that."""
    margins, _ = _synthetic(400, PLANTED, seed=1)
    # orient every pair as a build would: the majority of votes for the first response
    oriented = [
        m if sum(np.sign(list(m.values()))) > 0 else {k: -v for k, v in m.items()} for m in margins
    ]
    rng = np.random.default_rng(2)
    shuffled = [m if rng.random() < 0.5 else {k: -v for k, v in m.items()} for m in oriented]
    a, fa = _fit(oriented)
    b, fb = _fit(shuffled)
    for name in PLANTED:
        assert fa["label_model"]["annotator_accuracy"][name] == pytest.approx(
            fb["label_model"]["annotator_accuracy"][name], abs=1e-4
        )
    for m in oriented[:20]:
        v, w = a.vote(m), a.vote({k: -x for k, x in m.items()})
        assert v is not None and w is not None
        assert w.mu == -v.mu and w.sigma == v.sigma  # exact
        assert b.vote(m).mu == pytest.approx(v.mu, abs=1e-3)
    # the raw posterior is symmetric already; mu's explicit antisymmetrisation only trims noise
    assert a.model is not None
    p = a.model.model.predict_proba(np.array([[1, 0, 1], [0, 1, 0]]))[:, 1]
    assert p[0] == pytest.approx(1 - p[1], abs=1e-4)


def _candidate(k: int, margins: dict[str, float]) -> Pair:
    return Pair(
        pair_id=f"p{k}",
        instruction_id=f"i{k}",
        prompt="q",
        chosen_response_id=f"c{k}",
        rejected_response_id=f"r{k}",
        annotator_margins=margins,
        status="candidate",
    )


def test_selectable_in_the_filter() -> None:
    margins, _ = _synthetic(80, PLANTED, seed=3)
    pairs = [_candidate(k, m) for k, m in enumerate(margins)]
    final, figures = vote_and_filter(
        pairs, [], FilterConfig(aggregate="label_model", keep_share=None)
    )
    assert figures["aggregate"] == "label_model" and figures["label_model"]["fitted"]
    assert figures["kept"] + figures["dropped"] == len(pairs)
    assert figures["kept"] > 0 and figures["dropped_by_reason"].get("negative_mu", 0) > 0
    for p in final:
        assert p.margin == p.mu and -1 <= p.mu <= 1
        assert p.sigma == pytest.approx(math.sqrt(1 - p.mu**2))
        assert (p.status == "kept") == (p.mu > 0)


def test_cannot_fit_falls_back_to_the_mean_and_says_so() -> None:
    single = [{"cdr": x} for x in (1.0, -2.0, 0.5) * 10]
    agg, figures = _fit(single)
    lm = figures["label_model"]
    assert not lm["fitted"] and lm["not_fitted_because"].startswith("1 annotator")
    mean = MeanVote(FilterConfig())
    mean.fit(single)
    assert agg.vote(single[1]) == mean.vote(single[1])

    # two annotators: agreement cannot say which one to trust (a build without the judge)
    two = [{"cdr": x, "flr": -x} for x in (1.0, -2.0, 0.5) * 10]
    _, figures = _fit(two)
    assert not figures["label_model"]["fitted"]
    assert figures["label_model"]["not_fitted_because"].startswith("2 annotator")

    few, _ = _synthetic(MIN_SHARED_PAIRS - 1, PLANTED, seed=4)
    _, figures = _fit(few)
    assert not figures["label_model"]["fitted"]
    assert f"fewer than {MIN_SHARED_PAIRS}" in figures["label_model"]["not_fitted_because"]

    # every annotator abstains (ties): no agreement to learn; mu 0 and the filter drops it
    silent = [_candidate(k, {"cdr": 0.0, "flr": 0.0, "judge": 0.0}) for k in range(30)]
    final, figures = vote_and_filter(silent, [], FilterConfig(aggregate="label_model"))
    assert not figures["label_model"]["fitted"]
    assert {p.reason for p in final} == {"weak_preference"} and all(p.mu == 0 for p in final)

    assert agg.vote({}) is None
    with pytest.raises(RuntimeError, match="before fit"):
        LabelModelVote(FilterConfig()).vote({"cdr": 1.0})
