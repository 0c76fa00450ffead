"""Helpers shared by several test modules (records made by hand, a typed run record, the card's
front matter). Test modules import these, never each other; fixtures live in conftest.py."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml
from prefsynth.curation.voting import Aggregate, Vote

from prefsynth.config import FilterConfig
from prefsynth.errors import ConfigError
from prefsynth.records import Annotation, ModelRef, Pair
from prefsynth.run_record import (
    CurationFigures,
    DatasetInfo,
    RowCounts,
    RunRecord,
    StageSummary,
    VotingFigures,
)

# --------------------------------------------------------------------------- the card


def front_matter(card: str) -> dict[str, Any]:
    """The YAML front matter of a dataset card."""
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


# --------------------------------------------------------------------------- run records


def model_ref(model_id: str, licence: str | None = "apache-2.0") -> ModelRef:
    return ModelRef(
        model_id=model_id,
        backend="transformers",
        source=model_id,
        sha256="ab" * 32,
        fingerprint="ab" * 32,
        dtype="bfloat16",
        license=licence,
    )


def make_record(
    run_id: str = "demo-1",
    *,
    store: str = "shards",
    keys: dict[str, list[str]] | None = None,
    pairs_kept: int = 4,
    pairs_dropped: int = 2,
    status: str = "completed",
    **update: Any,
) -> RunRecord:
    """A valid run record for tests that need one without building (publishing, the audit of a
    hand-made store); ``keys``: stage -> shard keys in the store. Typed, so it cannot name a
    field the build does not write."""
    stages = {
        stage: StageSummary(
            shards=len(k), computed=len(k), reused=0, rows=0, seconds=0.0, shard_keys=k
        )
        for stage, k in (keys or {}).items()
    }
    record = RunRecord(
        run_id=run_id,
        status=status,  # type: ignore[arg-type]
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:01:00+00:00",
        prefsynth_version="0.1.0",
        code_version="test",
        config_hash="0" * 16,
        config={"name": "demo", "seed": 7},
        models={"instructions": model_ref("m"), "responses": model_ref("m")},
        store=store,
        stages=stages,
        diversity=CurationFigures(instructions=6, kept=5, failed=1),
        voting=VotingFigures(kept=pairs_kept, dropped=pairs_dropped),
        rows=RowCounts(
            instructions=6,
            instructions_ok=5,
            instructions_failed=1,
            instructions_duplicate=0,
            instructions_contaminated=0,
            instructions_kept=5,
            responses=15,
            annotations=30,
            annotations_ok={"cdr": 30},
            pairs_kept=pairs_kept,
            pairs_dropped=pairs_dropped,
            dropped_by_reason={"weak_preference": pairs_dropped} if pairs_dropped else {},
        ),
        dataset=DatasetInfo(splits={"train": pairs_kept}),
    )
    return record.model_copy(update=update)


# --------------------------------------------------------------------------- pairs and judge rows


def make_pairs(n: int, per_instruction: int, dropped: int = 0) -> list[Pair]:
    """``n`` instructions with ``per_instruction`` kept pairs each, plus dropped pairs."""
    pairs = [
        Pair(
            pair_id=f"pair-{i:03d}-{slot}",
            instruction_id=f"ins-{i:03d}",
            prompt=f"prompt {i}",
            chosen_response_id=f"r-{i}-{slot}-c",
            rejected_response_id=f"r-{i}-{slot}-r",
            chosen=f"good answer {i}.{slot}",
            rejected="bad",
            score_chosen=float(slot),
            score_rejected=-1.0,
            margin=0.5,
            mu=0.5,
            sigma=0.1,
            wco=0.4,
            n_voters=1,
            n_agree=1,
            standardized_margins={"cdr": 0.5},
            status="kept",
            source_method="seed_self_instruct",
            len_chosen=4,
            len_rejected=1,
        )
        for i in range(n)
        for slot in range(per_instruction)
    ]
    pairs += [
        Pair(
            pair_id=f"pair-drop-{j}",
            instruction_id=f"drop-{j}",
            prompt=f"dropped prompt {j}",
            chosen_response_id=f"d-{j}-c",
            rejected_response_id=f"d-{j}-r",
            chosen="meh",
            rejected="meh too",
            score_chosen=0.0,
            score_rejected=0.0,
            status="dropped",
            reason="weak_preference",
        )
        for j in range(dropped)
    ]
    return pairs


def make_pair(
    i: int,
    margins: dict[str, float],
    status: str,
    reason: str | None = None,
    mu: float | None = None,
    sigma: float | None = None,
    lens: tuple[int, int] | None = (100, 100),
    responses: bool = True,
    flipped: bool = False,
) -> Pair:
    return Pair(
        pair_id=f"p{i}",
        instruction_id=f"ins{i}",
        prompt=f"prompt {i}",
        chosen="chosen text" if responses else None,
        rejected="rejected text" if responses else None,
        annotator_margins=margins,
        mu=mu,
        sigma=sigma,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        flipped=flipped,
        len_chosen=lens[0] if lens else None,
        len_rejected=lens[1] if lens else None,
    )


def hand_pairs() -> list[Pair]:
    return [
        make_pair(0, {"cdr": 1.0, "flr": 0.5, "judge": 1.0}, "kept", None, 0.8, 0.1, (120, 100)),
        make_pair(1, {"cdr": 2.0, "flr": 1.0, "judge": 0.5}, "kept", None, 1.2, 0.3, (90, 100)),
        make_pair(
            2, {"cdr": 0.5, "flr": -0.5, "judge": 0.0}, "dropped", "annotators_disagree", 0.1, 0.5
        ),
        make_pair(
            3, {"cdr": -1.0, "flr": -0.2, "judge": -1.5}, "dropped", "negative_mu", -1.0, 0.2
        ),
        make_pair(4, {"cdr": 0.3, "flr": 0.1}, "kept", "flipped", 0.4, 0.2, flipped=True),
        make_pair(5, {}, "dropped", "too_few_responses", lens=None, responses=False),
        make_pair(6, {"cdr": 1.0}, "candidate"),  # not voted: counted, not audited
    ]


def _judge(
    name: str, v1: int | None, v2: int | None, status: str = "ok", pair: str = "p"
) -> Annotation:
    """A judge row as annotators/judge.py writes it (order 2 un-swapped by negation)."""
    s1, s2 = v1, (None if v2 is None else -v2)
    consistent = None if None in (s1, s2) else (np.sign(s1) == np.sign(s2))
    return Annotation(
        annotation_id=f"ann-{name}-{pair}",
        annotator=name,
        instruction_id="ins",
        response_id="rsp",
        pair_id=pair,
        score=None if status != "ok" else (s1 + s2) / 2,  # type: ignore[operator]
        status=status,  # type: ignore[arg-type]
        evidence={
            "verdict_order1": v1,
            "verdict_order2": v2,
            "strength_order1": s1,
            "strength_order2": s2,
            "consistent": None if consistent is None else bool(consistent),
        },
    )


JUDGE_ROWS = [
    _judge("judge", 2, -1, pair="p0"),  # y1 wins in both orders -> consistent
    _judge("judge", 1, 1, pair="p1"),  # A wins in both orders -> inconsistent
    _judge("judge", 0, 0, pair="p2"),  # tie in both -> consistent
    _judge("judge", -1, 1, pair="p3"),  # y2 wins in both orders -> consistent
    _judge("judge", 1, None, status="abstain", pair="p4"),  # second order unparsable
    _judge("judge_canary", -2, 2, pair="p0"),  # canary: ignored
    _judge("cdr", -2, -2, pair="p1"),  # another annotator: ignored
]


# --------------------------------------------------------------------------- tiny models


def tiny_model(folder: Path, tokenizer_dir: Path, seed: int, layers: int = 2) -> Path:
    """A tiny random Llama model with the given tokenizer, saved once in ``folder``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    # The writer's version is in both config files and so in the folder's fingerprint, which
    # shard keys name: without this, a new transformers release changes every key and pair id
    # of the golden build (tests/test_golden_build.py) with not one number changed.
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved.pop("transformers_version", None)
        path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


@contextmanager
def in_float64(engine: Any) -> Iterator[None]:
    """Run a transformers engine's model in float64 for a test that compares two ways of
    computing the same scores, then cast it back (exactly: the weights came from its dtype).
    In float32 the two ways differ by rounding over different pass shapes, and by how much
    depends on the CPU's kernels: 1.9e-6 nat on an AVX2 CPU, 3.7e-4 on an AVX-512 one. A
    tiny random model's near-uniform attention moves a score by only 4e-5 to 2e-4 when a
    position is wrong, so only in float64 can one tolerance pass everywhere and still catch
    that bug. Scores still leave the engine as float32 (its ``.float()`` before
    ``log_softmax``); that last rounding is the same for both ways."""
    original = next(engine.model.parameters()).dtype
    engine.model.double()
    try:
        yield
    finally:
        engine.model.to(original)


#: --set overrides that run the packaged models in float32 on every CPU. With dtype auto they
#: run in bfloat16 where the CPU has native bfloat16, and bfloat16 rounds differently per kernel
#: (AVX-512 against AMX), which sends the 135M model down other paths: on a 2-core Xeon with AMX
#: the default build in bfloat16 had 4 of its 10 instructions fail their checks and kept 2 pairs,
#: and the mixed-style build's SkillMix instructions all failed (both passed in bfloat16 on an
#: AVX-512 EPYC). float32 is what dtype auto picks on AVX2 CPUs, where the end-to-end tests were
#: first written; on the Xeon they pass in float32.
PACKAGED_FLOAT32 = ("models.smollm2.dtype=float32", "models.gemma3.dtype=float32")


def tiny_overrides(tiny: dict[str, Path], **extra: object) -> list[str]:
    """--set overrides for a fast build on the tiny models: ``tiny_a`` writes, answers, scores
    and judges, ``tiny_b`` is CDR's weak model. Swapping one model takes one more override
    (``models.tiny_a.model=...``)."""
    sets = [
        f"models.tiny_a.model={tiny['a']}",
        f"models.tiny_b.model={tiny['b']}",
        "instructions.model=tiny_a",
        "responses.model=tiny_a",
        "annotators.cdr.strong=tiny_a",
        "annotators.cdr.weak=tiny_b",
        "annotators.flr.model=tiny_a",
        "annotators.judge.model=tiny_a",
        # Self-Instruct: one short generation per instruction (the default mix extracts
        # skills first); the styles' own builds are in tests/test_e2e_styles.py
        "instructions.style=seed_self_instruct",
        "instructions.n=6",
        "shard_size=2",
        "responses.n=3",
        "instructions.seed_self_instruct.sampling.max_new_tokens=16",
        "responses.sampling.max_new_tokens=12",
        # random tiny models almost never stop before the length limit, so the response gate
        # would flag nearly every answer as truncated and leave no pair; the gate has its own
        # build test (tests/test_response_gate.py), which turns it back on
        "gate.enabled=false",
    ]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return sets


def one_instruction(text: str, responses: list[str], method: str = "t") -> tuple[Any, list[Any]]:
    """An Instruction ``i`` and Responses ``r0..`` with placeholder provenance, for annotator
    and pair tests that need records, not generation."""
    from prefsynth.records import (
        GenerationProvenance,
        Instruction,
        ModelRef,
        Response,
        SamplingParams,
    )

    prov = GenerationProvenance(
        model=ModelRef(model_id="m", backend="t", source="s", fingerprint="f"),
        sampling=SamplingParams(),
        seed=0,
        code_version="v",
    )
    ins = Instruction(
        instruction_id="i",
        shard_key="s",
        index=0,
        method=method,
        text=text,
        status="ok",
        provenance=prov,
    )
    rsp = [
        Response(
            response_id=f"r{j}",
            instruction_id="i",
            index=j,
            text=t,
            finish_reason="stop",
            n_tokens=1,
            n_chars=len(t),
            provenance=prov,
        )
        for j, t in enumerate(responses)
    ]
    return ins, rsp


# --------------------------------------------------------------------------- the Hub

COMMIT_URL = "https://huggingface.co/datasets/org/name/commit/abc123"


class FakeApi:
    """Records every Hub call; ``failures[name]`` are raised by that method, in order."""

    def __init__(self, failures: dict[str, list[Exception]] | None = None, token: str = ""):
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.failures = failures or {}
        self.token = token
        self.uploaded: list[str] = []

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        if self.failures.get(name):
            raise self.failures[name].pop(0)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        self._call("create_repo", repo_id, **kwargs)
        return f"https://huggingface.co/datasets/{repo_id}"

    def create_branch(self, repo_id: str, **kwargs: Any) -> None:
        self._call("create_branch", repo_id, **kwargs)

    def upload_folder(self, **kwargs: Any) -> Any:
        self._call("upload_folder", **kwargs)
        folder = Path(kwargs["folder_path"])
        files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        self.uploaded = sorted(
            f for f in files if any(fnmatch(f, pat) for pat in kwargs["allow_patterns"])
        )
        return SimpleNamespace(commit_url=COMMIT_URL, oid="abc123")


class NeedsAFile(Aggregate):
    """A toy aggregate that cannot be built without a setting the config lacks: the side-by-side
    comparisons (evaluation, audit) must skip it with this reason."""

    description = "needs a setting this config lacks"

    def __init__(self, config: FilterConfig) -> None:
        raise ConfigError("filter.calibration: no file given")

    def fit(self, margins: list[Mapping[str, float]]) -> dict[str, Any]:  # pragma: no cover
        return {}

    def vote(self, margins: Mapping[str, float]) -> Vote | None:  # pragma: no cover
        return None


def bench_script(name: str) -> Any:
    """``bench/NAME.py`` as a module (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
