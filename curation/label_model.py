"""The ``label_model`` aggregate: learn each annotator's reliability from agreement alone.

A Dawid-Skene family model treats the better response of each pair as a hidden class and each
annotator as a noisy voter with an unknown accuracy; it estimates the accuracies from how the
annotators agree with one another, with no human label, and gives each pair the posterior
probability p = P(chosen is better | votes). The model is snorkel's ``LabelModel`` (a
conditionally independent latent-class model fitted by matrix completion on the annotators'
agreement matrix); ``bench/label_models.py`` compares it with crowd-kit's DawidSkene,
OneCoinDawidSkene, GLAD and MACE and with cleanlab's CROWDLAB on the committed human-labelled
margins, and docs/methods.md §12.4 says why this one.

Votes are signs: an annotator whose margin is > 0 votes for the chosen response, < 0 for the
rejected one, and a margin of 0 (a tie, or the judge's "no preference") abstains. The sign
throws away the margin's size, but it is the only thing the annotators share a unit for.

Orientation: in a build every candidate pair is already oriented (chosen = the ranking's
preferred), so the votes lean towards "chosen" and a class prior learned from them would say
"the chosen is usually better" whatever the annotators said. The model is therefore fitted on
every pair twice, once as given and once with chosen and rejected swapped (all votes negated),
with class balance 1/2. The doubled rows are the same multiset for any orientation of the
input, so the fitted accuracies do not depend on it. A pair's strength is then made exactly
antisymmetric: mu = P(first better | v) - P(first better | -v), which equals 2p - 1 when the fit
is symmetric (it is, to about 1e-6; tested) and negates exactly when the pair is swapped.

The pair's Vote: mu = 2p - 1 = E[y] for the label y = +1 (chosen better) / -1, so mu > 0 means
the chosen is more likely better and |mu| is confidence; sigma = sqrt(1 - mu²) = std[y] under the
posterior (0 when certain, 1 at p = 1/2). sigma is then a function of mu: a ``max_sigma`` rule is
a ``min_abs_mu`` rule in disguise with this aggregate, which is what a single posterior gives.

When the model cannot be fitted (fewer than three annotators ever vote: with two, agreement
cannot say which one to trust, and snorkel needs three; or fewer than :data:`MIN_SHARED_PAIRS`
pairs carry two or more votes: agreement cannot be measured), the aggregate falls back to the
``mean`` vote (RMS-standardised mean and spread, Secrets of RLHF II)
for the whole dataset, and its figures say ``fitted: false`` with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prefsynth.curation.voting import Aggregate, MeanVote, Vote, posterior_vote, rms_scales

from prefsynth.config import FilterConfig
from prefsynth.registry import AGGREGATES

log = logging.getLogger(__name__)

LIBRARY = "snorkel LabelModel"

#: Pairs with two or more votes needed to fit. Agreement is all the model learns from; with 20
#: such pairs an agreement rate has a standard error of at most 0.11, the least that can tell a
#: reliable annotator (0.9) from a weak one (0.6). A floor against nonsense, not a guarantee.
MIN_SHARED_PAIRS = 20

#: snorkel's fit settings: its default optimiser (SGD) for 500 epochs (its default is 100, which
#: leaves the planted accuracies of the synthetic test visibly short of their values), fixed seed
#: so a build is reproducible.
N_EPOCHS = 500
SEED = 0


def votes_of(margins: list[Mapping[str, float]]) -> list[dict[str, int]]:
    """Each pair's votes: +1 for the first (chosen) response, -1 for the second; 0 and None
    margins abstain and are left out."""
    return [
        {name: 1 if v > 0 else -1 for name, v in m.items() if v is not None and v != 0}
        for m in margins
    ]


def doubled_votes(votes: list[dict[str, int]]) -> list[dict[str, int]]:
    """The pairs as given, then the same pairs swapped (every vote negated): pair i and pair
    i + n are the two orientations of one comparison. Fitting on this makes the model
    symmetric under swapping chosen and rejected."""
    return [*votes, *({name: -v for name, v in vote.items()} for vote in votes)]


def _matrix(votes: list[dict[str, int]], names: list[str]) -> Any:
    """snorkel's label matrix: 1 = first better, 0 = second better, -1 = abstain."""
    import numpy as np

    return np.array(
        [[(1 if vote[n] > 0 else 0) if n in vote else -1 for n in names] for vote in votes],
        dtype=int,
    ).reshape(len(votes), len(names))


class FittedModel:
    """A snorkel LabelModel fitted on the votes in both orientations (:func:`doubled_votes`),
    with the annotator order its label matrix uses."""

    def __init__(self, votes: list[dict[str, int]]) -> None:
        from snorkel.labeling.model import LabelModel

        self.names = sorted({name for vote in votes for name in vote})
        self.model = LabelModel(cardinality=2, verbose=False)
        self.model.fit(
            _matrix(doubled_votes(votes), self.names),
            class_balance=[0.5, 0.5],
            n_epochs=N_EPOCHS,
            seed=SEED,
            progress_bar=False,
        )
        self._cache: dict[tuple[int, ...], float] = {}

    def accuracies(self) -> dict[str, float]:
        """Each annotator's estimated accuracy (P(vote right | it votes)), snorkel's weights."""
        return {n: float(w) for n, w in zip(self.names, self.model.get_weights(), strict=True)}

    def mu(self, votes: Mapping[str, int]) -> float:
        """P(first better | votes) - P(first better | swapped votes): 2p - 1, exactly
        antisymmetric. Annotators the model was not fitted on are ignored."""
        known = {n: v for n, v in votes.items() if n in self.names}
        key = tuple(known.get(n, 0) for n in self.names)
        if key not in self._cache:
            swapped = {n: -v for n, v in known.items()}
            p = self.model.predict_proba(_matrix([known, swapped], self.names))[:, 1]
            self._cache[key] = float(p[0] - p[1])
        return self._cache[key]


@AGGREGATES.register("label_model")
class LabelModelVote(Aggregate):
    """Posterior of snorkel's LabelModel fitted on the vote signs in both orientations;
    mu = 2p - 1, sigma = sqrt(1 - mu²). Falls back to ``mean`` when it cannot be fitted."""

    description = (
        f"{LIBRARY} on each annotator's vote sign, fitted on every pair in both orientations; "
        "mu = 2 P(chosen better) - 1, sigma = sqrt(1 - mu^2); standardized = margin / RMS"
    )

    def __init__(self, config: FilterConfig) -> None:
        super().__init__(config)
        self.scales: dict[str, float] = {}
        self.model: FittedModel | None = None
        self.fallback: MeanVote | None = None

    def fit(self, margins: list[Mapping[str, float]]) -> dict[str, Any]:
        self.scales = rms_scales(margins)
        votes = votes_of(margins)
        voting = sorted({name for vote in votes for name in vote})
        shared = sum(len(vote) >= 2 for vote in votes)
        reason = None
        if len(voting) < 3:
            # with two voters, agreement cannot tell which one to trust (snorkel refuses too)
            reason = f"{len(voting)} annotator(s) voted; the label model needs three or more"
        elif shared < MIN_SHARED_PAIRS:
            reason = f"{shared} pairs with two or more votes, fewer than {MIN_SHARED_PAIRS}"
        self.model, self.fallback = None, None
        accuracies: dict[str, float] = {}
        if reason is None:
            self.model = FittedModel(votes)
            accuracies = self.model.accuracies()
        else:
            log.warning("label_model cannot be fitted (%s): the vote is the mean", reason)
            self.fallback = MeanVote(self.config)
            self.fallback.fit(margins)
        figures: dict[str, Any] = {
            "library": LIBRARY,
            "fitted": reason is None,
            "not_fitted_because": reason,
            "annotator_accuracy": accuracies,
            # votes cast per annotator, and pairs with two or more votes: what agreement saw
            "votes": {name: sum(name in vote for vote in votes) for name in voting},
            "pairs_with_two_or_more_votes": shared,
        }
        return {"scales": self.scales, "label_model": figures}

    def vote(self, margins: Mapping[str, float]) -> Vote | None:
        if self.model is None:
            if self.fallback is None:
                raise RuntimeError("label_model: vote() before fit()")
            return self.fallback.vote(margins)
        if not margins:
            return None
        (votes,) = votes_of([margins])
        mu = self.model.mu(votes)
        z = {name: v / self.scales.get(name, 1.0) for name, v in margins.items()}
        return posterior_vote(z, mu, self.config.uwo_lambda, votes)
