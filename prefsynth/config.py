"""The build config: one pydantic model, loaded from YAML and overridable from the CLI.

The defaults *are* the embedded default build (``prefsynth build`` with no arguments): the
packaged SmolLM2-135M-Instruct writes instructions and responses on CPU, CDR scores them with
SmolLM2 (strong) over Gemma 3 270M base (weak). A config file only needs the fields it changes.

Errors name the field path (``responses.n: Input should be a valid integer``) and exit with
status 2 from the CLI; unknown fields are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from prefsynth.errors import ConfigError
from prefsynth.hashing import content_key
from prefsynth.records import SamplingParams, StrictModel


class EngineSpec(StrictModel):
    """Which model runs where. Identical specs share one loaded engine per worker process."""

    model: str = Field(
        "smollm2-135m-instruct",
        description="catalogue name (prefsynth models), local HF folder, .gguf file, "
        "or the served model name for backend=openai",
    )
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "auto",
        description="auto: float32 on a CPU without native bfloat16 (emulated bf16 is several "
        "times slower), bfloat16 on one with it when measured faster, bfloat16 (or float16) on "
        "a GPU; resolved before a build keys its shards. float32 keeps log-prob sums exact",
    )
    device: str = Field("auto", description="transformers: cpu, cuda, cuda:1 or auto")
    batch_size: int = Field(
        64,
        ge=1,
        description="sequences per forward pass (transformers); scoring passes are also capped "
        "at 2k padded tokens. Decoding on CPU is bound by skinny matmuls: 64 sequences "
        "sample 1.6x faster than 16",
    )
    chat_template: str | None = Field(
        None, description="Jinja chat template overriding the model's (or for models without one)"
    )
    tokenizer: str | None = Field(
        None,
        description="openai backend: local tokenizer (catalogue name or HF folder) used to "
        "render chat templates and split echoed log-probs exactly",
    )
    # vLLM sidecar
    python: str | None = Field(
        None,
        description="vllm backend: interpreter of the vLLM environment "
        "(default $PREFSYNTH_VLLM_PYTHON, then ./.venv-vllm/bin/python)",
    )
    vllm_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="extra keyword arguments for vllm.LLM (enforce_eager, max_model_len, "
        "gpu_memory_utilization, tensor_parallel_size, ...)",
    )
    # OpenAI-compatible server
    base_url: str | None = Field(None, description="openai backend: e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="env var holding the API key, if any")
    timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(4, ge=0)
    max_concurrency: int = Field(8, ge=1, description="openai backend: requests in flight")
    requests_per_second: float | None = Field(
        None, gt=0, description="openai backend: rate limit across this engine's requests"
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="openai backend: extra JSON fields for every request (server-specific)",
    )

    @model_validator(mode="after")
    def _backend_needs(self) -> EngineSpec:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return self

    def key(self) -> str:
        """Identity for the per-process engine cache (batching knobs excluded)."""
        return content_key(
            self.model_dump(exclude={"batch_size", "max_concurrency", "requests_per_second"})
        )


class DedupConfig(StrictModel):
    """Remove repeated instructions; the first occurrence is kept, the others record
    ``duplicate_of`` and the similarity. Candidates are blocked by embedding neighbours so the
    cost stays far below all-pairs."""

    enabled: bool = True
    exact: bool = Field(True, description="identical after lower-casing and collapsing spaces")
    near_threshold: float | None = Field(
        95.0,
        ge=0,
        le=100,
        description="rapidfuzz token_set_ratio at or above which two "
        "instructions are near-duplicates; null disables",
    )
    semantic_threshold: float | None = Field(
        0.88,
        ge=-1,
        le=1,
        description="cosine of all-MiniLM-L6-v2 embeddings at or above which "
        "two instructions are semantic duplicates; null disables",
    )
    neighbours: int = Field(16, ge=1, description="nearest neighbours compared per instruction")
    embedding_model: str = "all-minilm-l6-v2"


BENCHMARKS = (
    "alpaca_eval",
    "mt_bench",
    "vicuna_bench",
    "arena_hard_v0.1",
    "arena_hard_v2.0",
    "ifeval",
    "hh_rlhf_helpful",
    "hh_rlhf_harmless",
    "pandalm",
)


class DecontamConfig(StrictModel):
    """Remove instructions close to an evaluation prompt (n-gram overlap or embedding cosine);
    every removal records the benchmark, item id and score."""

    enabled: bool = True
    benchmarks: list[str] = Field(default_factory=lambda: list(BENCHMARKS))
    ngram: int = Field(8, ge=3, description="word n-gram length for overlap matching")
    ngram_threshold: float | None = Field(
        0.5,
        gt=0,
        le=1,
        description="share of an instruction's n-grams found in one benchmark "
        "prompt at or above which it is contaminated; null disables",
    )
    semantic_threshold: float | None = Field(
        0.82,
        ge=-1,
        le=1,
        description="cosine to a benchmark prompt at or above which an "
        "instruction is contaminated; null disables",
    )
    embedding_model: str = "all-minilm-l6-v2"

    @model_validator(mode="after")
    def _known_benchmarks(self) -> DecontamConfig:
        unknown = sorted(set(self.benchmarks) - set(BENCHMARKS))
        if unknown:
            raise ValueError(f"unknown benchmarks {unknown}; known: {list(BENCHMARKS)}")
        return self


class SeedInstructConfig(StrictModel):
    """``seed_self_instruct``: the model sees a few seed tasks and writes a new one."""

    seeds_file: Path | None = Field(
        None, description="JSONL with an 'instruction' field per line; default: packaged seeds"
    )
    examples_per_prompt: int = Field(3, ge=1, le=20)
    max_attempts: int = Field(3, ge=1, description="tries per instruction before it is 'failed'")
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(
            temperature=0.9, top_p=0.95, top_k=50, max_new_tokens=64, stop=["\n"]
        )
    )


class SkillsConfig(StrictModel):
    """Instruct-SkillMix stage A: where the skill list and query types come from (METHODS §1.1).

    ``seed_free`` asks the model for topics, then the skills each topic needs, then query
    types; ``seed_dependent`` asks which skills each of a set of seed tasks needs; ``file``
    reads a saved skills artifact (JSON, e.g. from an earlier build, to pin it) or a text file
    with one skill per line.
    """

    source: Literal["seed_free", "seed_dependent", "file"] = "seed_dependent"
    file: Path | None = None
    query_types_file: Path | None = Field(
        None,
        description="JSON list of {name, definition, examples}; default: extracted "
        "(seed_free) or the packaged list",
    )
    seed_tasks: int = Field(24, ge=1, description="seed_dependent: seed tasks to analyse")
    topics: int = Field(8, ge=1, description="seed_free: topics to list")
    merge_threshold: float = Field(
        90.0, ge=0, le=100, description="rapidfuzz ratio at which two skill names are merged"
    )
    max_skills: int = Field(400, ge=2)
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(
            temperature=0.7, top_p=0.95, top_k=50, max_new_tokens=64
        )
    )

    @model_validator(mode="after")
    def _file_given(self) -> SkillsConfig:
        if self.source == "file" and self.file is None:
            raise ValueError("skills.source 'file' needs skills.file")
        return self


class SkillMixConfig(StrictModel):
    """Instruct-SkillMix stage B (METHODS §1.2): an instruction and answer that need k skills."""

    k: int = Field(2, ge=1, le=5, description="skills combined per example")
    skills: SkillsConfig = Field(default_factory=SkillsConfig)
    refine: bool = Field(False, description="run the critique and refine turns")
    keep_reference: bool = Field(
        True, description="keep the generator's answer as an extra candidate response"
    )
    max_attempts: int = Field(3, ge=1)
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(
            temperature=0.7, top_p=0.95, top_k=50, max_new_tokens=256, stop=["### Kind of request"]
        )
    )


DEFAULT_DOMAINS = (
    "medicine",
    "law",
    "engineering",
    "finance",
    "biology",
    "chemistry",
    "computer science",
    "physics",
    "economics",
    "psychology",
)


class PikaConfig(StrictModel):
    """PiKa (METHODS §2): expert personas, one knowledge-intensive instruction per persona."""

    personas_file: Path | None = Field(
        None,
        description="JSONL with 'persona' (text) and optional 'id', 'domain' per line, "
        "e.g. a PersonaHub subset; default: personas written by the model",
    )
    domains: list[str] = Field(default_factory=lambda: list(DEFAULT_DOMAINS), min_length=1)
    persona_sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(
            temperature=0.9, top_p=0.95, top_k=50, max_new_tokens=48, stop=["\n"]
        )
    )
    max_attempts: int = Field(3, ge=1)
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(
            temperature=0.8, top_p=0.95, top_k=50, max_new_tokens=96, stop=["\n"]
        )
    )


Style = Literal["seed_self_instruct", "skillmix", "pika"]


class InstructionsConfig(StrictModel):
    """Stage 1: write instructions in one style, or a mix of styles with shares."""

    style: Literal["seed_self_instruct", "skillmix", "pika", "mix"] = "seed_self_instruct"
    n: int = Field(10, ge=1, description="instructions to write (before dedup)")
    mix: dict[Style, float] = Field(
        default_factory=lambda: {"skillmix": 0.5, "pika": 0.5},
        description="style: mix -> share of n per style",
    )
    engine: EngineSpec = Field(default_factory=EngineSpec)
    seed_self_instruct: SeedInstructConfig = Field(default_factory=SeedInstructConfig)
    skillmix: SkillMixConfig = Field(default_factory=SkillMixConfig)
    pika: PikaConfig = Field(default_factory=PikaConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)

    @model_validator(mode="after")
    def _mix_shares(self) -> InstructionsConfig:
        if self.style == "mix" and (
            not self.mix or any(v < 0 for v in self.mix.values()) or sum(self.mix.values()) <= 0
        ):
            raise ValueError("mix needs non-negative shares with a positive sum")
        return self

    def counts(self) -> dict[str, int]:
        """Instructions per style (largest remainder, so the counts add up to n)."""
        if self.style != "mix":
            return {self.style: self.n}
        total = sum(self.mix.values())
        exact = {s: self.n * v / total for s, v in self.mix.items()}
        counts = {s: int(x) for s, x in exact.items()}
        for s in sorted(exact, key=lambda s: exact[s] - counts[s], reverse=True):
            if sum(counts.values()) == self.n:
                break
            counts[s] += 1
        return {s: c for s, c in counts.items() if c > 0}


class PolicyShare(StrictModel):
    """One policy of a mixture: its engine, its share of each instruction's responses, and
    optionally its own sampling parameters."""

    engine: EngineSpec
    share: float = Field(1.0, gt=0)
    sampling: SamplingParams | None = None


class ResponsesConfig(StrictModel):
    """Stage 2: n sampled responses per instruction from the policy (or a policy mixture)."""

    n: int = Field(3, ge=1, description="responses per instruction")
    mixture: list[PolicyShare] = Field(
        default_factory=list,
        description="several policies: each instruction's n responses are split by share "
        "(largest remainder); empty: all from `engine`",
    )
    engine: EngineSpec = Field(default_factory=EngineSpec)

    def policies(self) -> list[tuple[EngineSpec, SamplingParams, int]]:
        """(engine, sampling, responses per instruction) for each policy, counts adding to n."""
        if not self.mixture:
            return [(self.engine, self.sampling, self.n)]
        total = sum(p.share for p in self.mixture)
        exact = [self.n * p.share / total for p in self.mixture]
        counts = [int(x) for x in exact]
        for k in sorted(range(len(exact)), key=lambda k: exact[k] - counts[k], reverse=True):
            if sum(counts) == self.n:
                break
            counts[k] += 1
        return [
            (p.engine, p.sampling or self.sampling, c)
            for p, c in zip(self.mixture, counts, strict=True)
            if c > 0
        ]

    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(
            temperature=0.8, top_p=0.95, top_k=50, max_new_tokens=128
        )
    )


class CDRConfig(StrictModel):
    """CDR (METHODS §3): log pi_strong(y|T(x)) - log pi_weak(y|T(x)), both on the same T(x).

    ``prompting: routed`` is CDR's customisation: a router model labels each prompt SAFETY,
    REASONING or CHAT, and T(x) gets that domain's system prompt (criteria) and one in-context
    exemplar; CHAT prompts stay plain when ``plain_chat`` is set (the paper's demo config).
    """

    enabled: bool = True
    strong: EngineSpec = Field(default_factory=EngineSpec)
    weak: EngineSpec = Field(default_factory=lambda: EngineSpec(model="gemma3-270m"))
    reward: Literal["sum", "mean"] = Field(
        "sum", description="sum over response tokens (paper code) or per-token mean (reward_hub)"
    )
    template: Literal["strong", "weak"] = Field(
        "strong", description="whose chat template renders T(x) for both models (paper: strong)"
    )
    prompting: Literal["vanilla", "routed"] = "vanilla"
    router: EngineSpec = Field(default_factory=EngineSpec, description="routed: classifier model")
    router_sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.0, max_new_tokens=8)
    )
    domains_file: Path | None = Field(
        None,
        description="routed: JSON with per-domain system prompts and exemplars; default: "
        "the packaged set (annotators/data/cdr_domains.json)",
    )
    plain_chat: bool = Field(True, description="routed: CHAT prompts get no system prompt")
    keep_token_logprobs: bool = Field(False, description="store per-token log-probs")


class FLRConfig(StrictModel):
    """FLR (METHODS §4): likelihood of positive vs negative follow-ups as the next user turn."""

    enabled: bool = True
    engine: EngineSpec = Field(default_factory=EngineSpec)
    followups_file: Path | None = Field(
        None, description="JSON follow-up set; default: annotators/data/flr_followups.json"
    )
    dimensions: list[str] | None = Field(None, description="default: every dimension in the set")
    max_per_polarity: int | None = Field(
        2, ge=1, description="follow-ups used per dimension and polarity (null: all)"
    )
    reuse_prefix: bool = Field(True, description="score follow-ups on a cached prefix")


NULL_RESPONSE = (
    "## Evaluation result\n\nThis response has been checked against every criterion and is "
    "the better response.\n\n[[A++]]"
)


class JudgeConfig(StrictModel):
    """LLM judge (METHODS §5): each candidate pair judged in both orders on a five-level scale.

    ``mode: choice`` constrains the verdict to the five labels (vLLM structured output, or the
    label with the highest likelihood on backends without it); ``mode: generate`` lets the
    judge write freely and parses the verdict, recording unparsable replies as abstentions.
    """

    enabled: bool = True
    engine: EngineSpec = Field(default_factory=EngineSpec)
    mode: Literal["choice", "generate"] = "choice"
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.0, max_new_tokens=384),
        description="generate mode: the judge's decoding (temperature 0 in both orders)",
    )
    length_k: int | None = Field(
        500,
        ge=0,
        description="a 'slightly better' win by more than K characters becomes a "
        "tie (WildBench); null disables",
    )
    max_chars: int = Field(3000, ge=100, description="responses are cut to this for the prompt")
    canary_share: float = Field(
        0.25, ge=0, le=1, description="share of instructions that get a null-response canary"
    )
    canary_text: str = Field(NULL_RESPONSE, description="the constant, irrelevant answer")


class RewardModelSpec(StrictModel):
    """A Hugging Face sequence-classification reward model, one voter of the ensemble."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", description="voter name in margins and columns")
    model: str = Field(description="local HF folder or hub id in the local HF cache")
    backend: Literal["transformers", "vllm"] = "transformers"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"
    device: str = "auto"
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(2048, ge=16)
    python: str | None = Field(None, description="vllm backend: sidecar interpreter")


class AnnotatorsConfig(StrictModel):
    cdr: CDRConfig = Field(default_factory=CDRConfig)
    flr: FLRConfig = Field(default_factory=FLRConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    reward_models: list[RewardModelSpec] = Field(
        default_factory=list, description="RM voters (none is packaged for offline use)"
    )

    @model_validator(mode="after")
    def _unique_rm_names(self) -> AnnotatorsConfig:
        names = [rm.name for rm in self.reward_models]
        clash = {n for n in names if names.count(n) > 1} | ({"cdr", "flr", "judge"} & set(names))
        if clash:
            raise ValueError(f"reward model names must be unique and not cdr/flr/judge: {clash}")
        return self

    def pointwise(self) -> list[str]:
        """Annotators that score each response on its own (they rank candidates)."""
        names = [n for n in ("cdr", "flr") if getattr(self, n).enabled]
        return names + [f"rm_{rm.name}" for rm in self.reward_models]

    def enabled(self) -> list[str]:
        return self.pointwise() + (["judge"] if self.judge.enabled else [])


class PairsConfig(StrictModel):
    """Stage 4: candidate pairs from each instruction's responses (METHODS §3.3, §7.3).

    Responses are ranked by the mean of each pointwise annotator's within-instruction z-score
    (scale-free, so annotators with different units count alike). Never a pair from a tie or
    from equal texts.
    """

    strategy: Literal["best_vs_worst", "best_vs_random", "all_prescreened"] = "best_vs_worst"
    rank_by: list[str] | None = Field(
        None, description="pointwise annotators that rank responses; default: all enabled"
    )
    min_margin: float = Field(
        0.0, ge=0.0, description="ranking-score gaps <= this are ties (dropped)"
    )


class FilterConfig(StrictModel):
    """Voting and filtering (METHODS §6, §7.6): keep strong, certain pairs; explain every drop.

    Margins are standardised per annotator by their root mean square over the dataset (a
    sign-free scale, so swapping chosen and rejected negates mu and leaves sigma unchanged),
    then mu = mean, sigma = population standard deviation, wco = min, uwo = mu - lambda * var.
    """

    uwo_lambda: float = Field(0.5, ge=0, description="lambda of uwo = mu - lambda * variance")
    negative: Literal["drop", "flip"] = Field(
        "drop", description="pairs with mu < 0: drop, or flip chosen and rejected"
    )
    flip_below: float = Field(
        -1.0, le=0, description="flip only when mu <= this (strongly negative); else drop"
    )
    min_abs_mu: float = Field(0.0, ge=0, description="drop |mu| below this (weak preference)")
    max_sigma: float | None = Field(None, ge=0, description="drop sigma above this (uncertain)")
    require_judge_consistency: bool = Field(
        False, description="drop pairs whose judge verdict changes with the order"
    )
    min_agreeing: int | None = Field(
        None, ge=1, description="drop pairs with fewer voters agreeing with mu's sign"
    )


class TaskRunnerConfig(StrictModel):
    """How Prefect runs the shard tasks: threads in this process, or a Dask or Ray cluster
    (a local one it starts, or an existing one at ``address``). Engines load once per worker
    process; stages that run models ask the runner for ``gpus_per_task`` GPUs."""

    kind: Literal["thread", "dask", "ray"] = "thread"
    max_workers: int = Field(1, ge=1, description="thread: shards in flight at once")
    address: str | None = Field(
        None, description="dask: tcp://host:8786; ray: host:port or ray://...; unset: local"
    )
    n_workers: int = Field(2, ge=1, description="local dask/ray cluster: worker processes")
    gpus_per_task: float = Field(0.0, ge=0, description="GPUs requested by model stages")


class PublishConfig(StrictModel):
    """Where a build is published on the Hugging Face Hub (nothing is pushed without repo)."""

    repo: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", description="ORG/NAME on the Hub"
    )
    private: bool = True
    revision: str | None = Field(None, description="branch to push to (default: main)")
    test_size: float = Field(0.1, ge=0, lt=1, description="share of kept pairs in the test split")
    split_seed: int = 0
    license: str | None = Field(None, description="override the licence derived from the models")
    max_retries: int = Field(5, ge=0)


class BuildConfig(StrictModel):
    """A whole build. Everything that changes an output is here and in the dataset card."""

    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="output folder name; default <name>-<config hash>, so re-running the same "
        "config resumes the same run",
    )
    output_dir: Path = Path("output")
    store_dir: Path | None = Field(
        None,
        description="shard store; default <run dir>/shards. Point several runs at one store to "
        "share every shard their configs have in common",
    )
    seed: int = 0
    shard_size: int = Field(
        10, ge=1, description="instructions per shard (a shard's responses sample as one batch)"
    )
    instructions: InstructionsConfig = Field(default_factory=InstructionsConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    annotators: AnnotatorsConfig = Field(default_factory=AnnotatorsConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    task_runner: TaskRunnerConfig = Field(default_factory=TaskRunnerConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)

    @model_validator(mode="after")
    def _rankers_enabled(self) -> BuildConfig:
        pointwise = self.annotators.pointwise()
        if not pointwise:
            raise ValueError("enable at least one pointwise annotator (cdr, flr, reward_models)")
        unknown = sorted(set(self.pairs.rank_by or []) - set(pointwise))
        if unknown:
            raise ValueError(f"pairs.rank_by has {unknown}; pointwise annotators: {pointwise}")
        return self

    def content_hash(self) -> str:
        """Hash of everything that changes the dataset (not where it is written or how run)."""
        return content_key(
            self.model_dump(
                mode="json", exclude={"run_id", "output_dir", "store_dir", "task_runner"}
            )
        )

    def engine_spec(self, ref: EngineSpec) -> EngineSpec:
        """The engine a stage's model reference names. Stages always go through here, so the
        shape of a reference (an inline spec today) is known in one place."""
        return ref

    def key_view(self, section: StrictModel) -> dict[str, Any]:
        """A config section as it enters shard keys: its JSON dump. Keys must not change when
        only the config's layout changes, or every existing shard store would be recomputed."""
        return section.model_dump(mode="json")

    def resolved_run_id(self) -> str:
        return self.run_id or f"{self.name}-{self.content_hash()[:8]}"

    def run_dir(self) -> Path:
        return self.output_dir / self.resolved_run_id()

    def shard_dir(self) -> Path:
        return self.store_dir or (self.run_dir() / "shards")


# --------------------------------------------------------------------------- loading


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid config ({origin}):"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        got = e.get("input")
        got_txt = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {got!r})"
        lines.append(f"  {path}: {msg}{got_txt}")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as a YAML scalar/flow value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected stage.field=value")
    path, raw = item.split("=", 1)
    keys = [k.strip() for k in path.split(".")]
    if not all(keys):
        raise ConfigError(f"--set {item!r}: empty field name in {path!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {path}: value {raw!r} is not valid YAML ({e})") from None
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        node: Any = data
        for depth, k in enumerate(keys[:-1]):
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(keys[:depth])} is not a section")
            node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(keys[:-1])} is not a section")
        node[keys[-1]] = value
    return data


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> BuildConfig:
    """Read YAML (optional), apply ``--set`` overrides, validate. Raises ConfigError."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
        data = loaded
    if overrides:
        data = apply_overrides(data, overrides)
        origin += " + --set"
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, origin)) from None


def dump_config(config: BuildConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
