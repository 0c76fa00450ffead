"""``prefsynth prepare``: the one-time work of an installation, done by ``make install``.

A fresh machine would otherwise pay for it inside the first build: assembling the Gemma GGUF
from its chunks, de-quantising both packaged GGUFs into HF folders (12-30 s each, every load,
without the conversion), casting them to the dtype this CPU computes fastest (measured here),
and embedding the ~14k benchmark prompts that decontamination compares every instruction
with. Each result is cached under ``$PREFSYNTH_CACHE_DIR`` (default ``~/.cache/prefsynth``)
and keyed by what it was made from (the GGUF's sha256; each benchmark file's sha256 and the
embedding model's fingerprint), so a changed input is recomputed and an unchanged one never
is. Running it again costs only the hashing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator


def prepare_caches() -> Iterator[str]:
    """Warm every cache a default build reads; yields one line per step for the user."""
    from prefsynth.curation.decontam import get_index
    from prefsynth.engines.catalogue import CATALOGUE, hf_folder, resolve_model
    from prefsynth.engines.device import cpu_dtype

    from prefsynth.config import DecontamConfig

    t0 = time.perf_counter()
    dtype = cpu_dtype()
    yield f"cpu dtype for dtype=auto: {dtype} ({time.perf_counter() - t0:.1f} s)"
    for name, entry in CATALOGUE.items():
        if entry.kind == "embedding":  # shipped as a ready sentence-transformers folder
            continue
        t0 = time.perf_counter()
        # float32, and the weights cast once to the dtype that dtype=auto picks on this CPU
        folders = {hf_folder(resolve_model(name), d) for d in ("float32", dtype)}
        yield f"{name}: {', '.join(sorted(map(str, folders)))} ({time.perf_counter() - t0:.1f} s)"
    decontam = DecontamConfig()
    t0 = time.perf_counter()
    index = get_index(decontam.benchmarks, decontam.ngram)
    index.embeddings(decontam.embedding_model)
    yield (
        f"decontamination index: {len(index)} prompts of {len(decontam.benchmarks)} benchmarks "
        f"embedded with {decontam.embedding_model} ({time.perf_counter() - t0:.1f} s)"
    )
