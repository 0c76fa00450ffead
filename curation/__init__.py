"""Curation: what is kept, what is dropped and why, how far to trust it, and how it is published.

* :mod:`.embeddings` — all-MiniLM-L6-v2 sentence embeddings, one model per process;
* :mod:`.dedup` — exact, near (rapidfuzz) and semantic (embedding) duplicates;
* :mod:`.decontam` — n-gram and embedding matches against evaluation benchmarks;
* :mod:`.diversity` — distinct-n, embedding spread, label balance, skill-pair coverage;
* :mod:`.instruction_curation` — the curation stage: decisions and figures per build;
* :mod:`.pairs` — pair construction (best vs worst), never from ties or equal texts;
* :mod:`.voting` — standardised margins, mu, sigma, wco, uwo (the one standardisation);
* :mod:`.filtering` — the vote (mu, sigma) and the filter with a reason per dropped pair;
* :mod:`.dataset` — TRL conversational preference format, ``datasets`` on disk, Parquet;
* :mod:`.audit` — agreement statistics (kappa, alpha), judge and length bias, accuracy;
* :mod:`.report` — audit and evaluation reports (Markdown, HTML, PNG, JSON);
* :mod:`.human_pairs` — the shipped human-labelled sets that annotators are measured on;
* :mod:`.card` — the dataset card (README.md) generated from the run record;
* :mod:`.publish` — the Hub release (configs, splits) and the push.
"""

if __name__ != "prefsynth.curation":  # the folder is importable from the repository root
    raise ImportError(
        f"import prefsynth.curation, not {__name__}: the package lives in the prefsynth namespace"
    )
