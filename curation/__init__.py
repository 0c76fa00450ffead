"""Curation: what is kept, what is dropped and why, how far to trust it, and how it is published.

* :mod:`curation.embeddings` — all-MiniLM-L6-v2 sentence embeddings, one model per process;
* :mod:`curation.dedup` — exact, near (rapidfuzz) and semantic (embedding) duplicates;
* :mod:`curation.decontam` — n-gram and embedding matches against evaluation benchmarks;
* :mod:`curation.diversity` — distinct-n, embedding spread, label balance, skill-pair coverage;
* :mod:`curation.instruction_curation` — the curation stage: decisions and figures per build;
* :mod:`curation.pairs` — pair construction (best vs worst), never from ties or equal texts;
* :mod:`curation.filtering` — the vote (mu, sigma) and the filter with a reason per dropped pair;
* :mod:`curation.dataset` — TRL conversational preference format, ``datasets`` on disk, Parquet;
* :mod:`curation.audit` — agreement statistics (kappa, alpha), judge and length bias, accuracy;
* :mod:`curation.report` — audit and evaluation reports (Markdown, HTML, PNG, JSON, artifacts);
* :mod:`curation.human_pairs` — the shipped human-labelled sets that annotators are measured on;
* :mod:`curation.card` — the dataset card (README.md) generated from the run;
* :mod:`curation.publish` — the Hub release (configs, splits) and the push.
"""
