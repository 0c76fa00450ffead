"""CDR: reward = log pi_strong(y | T(x)) - log pi_weak(y | T(x))  (docs/methods.md §7).

Both models are conditioned on the *same* rendered prompt T(x): the conversation rendered with
the strong model's chat template (as the paper code does; ``template: weak`` uses the weak
model's), passed to both engines as a string.
Each model tokenises the response with its own tokenizer; only response tokens are summed
(prompt and padding are never counted). ``reward="sum"`` is the paper code's summed ratio;
``"mean"`` divides by the strong model's response token count (reward_hub's default). Both are
kept in the evidence; ``score`` holds the configured one.

``reward="prefix"`` sums the log-ratio over the first ``prefix_tokens`` response tokens only
(:func:`prefix_reward`): every response longer than that contributes the same number of tokens,
so the reward cannot grow or shrink with length alone (the pointwise form of SamPO's
equal-token comparison, Lu et al. 2024); shorter responses sum all their tokens.

Per-side prompts (``strong_system`` / ``weak_system``): each side's T(x) gets its own system
prompt (packaged: ``criteria``, ``contrary``, in ``annotators/data/cdr_system_prompts.json``).
With the same model on both sides this is a same-model contrastive pair, the setting of the CDR
paper (its pairs share a family and a tokenizer): the reward is how much the criteria raise the
response's likelihood. Both sides still score the same response tokens.

Customisation (``prompting: routed``, docs/methods.md §7.2): a router model labels each prompt
SAFETY, REASONING or CHAT (an answer it cannot parse counts as CHAT and is flagged); T(x) then
carries that domain's system prompt with its criteria, and the user turn becomes
``<exemplar block>\\n<query>\\nGood Assistant:`` with one exemplar drawn per prompt. CHAT
prompts stay plain by default, as in the paper's demo configuration. Our own system prompts
and exemplars live in ``annotators/data/cdr_domains.json``; ``domains_file`` replaces them.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from prefsynth.annotators.base import Item, PointwiseAnnotator, Verdict, score_isolating_errors
from prefsynth.engines import Engine, ScoreRequest
from pydantic import BaseModel

from prefsynth.config import BuildConfig, CDRConfig, EngineSpec
from prefsynth.errors import InputDataError
from prefsynth.hashing import content_key, sha256_text
from prefsynth.inputs import read_json, validate
from prefsynth.records import Message, ModelRef
from prefsynth.registry import ANNOTATORS
from prefsynth.templates import read_template

NAME = "cdr"
VERSION = "2"
DOMAINS = ("SAFETY", "REASONING", "CHAT")
DATA = Path(__file__).parent / "data"
PACKAGED_DOMAINS = DATA / "cdr_domains.json"
SYSTEM_PROMPTS = DATA / "cdr_system_prompts.json"
ROUTER_TEMPLATE = DATA / "cdr_router.txt"
_ROUTE = re.compile(r"\[START\]\s*(SAFETY|REASONING|CHAT)\s*\[END\]", re.I)


class Exemplar(BaseModel):
    id: str
    criterion: str
    user: str
    good: str
    bad: str
    explanation: str

    def block(self) -> str:
        return (
            f"{self.criterion}\nUser: {self.user}\nGood Assistant: {self.good}\n"
            f"Bad Assistant: {self.bad}\nExplanation: {self.explanation}"
        )


class DomainPrompt(BaseModel):
    system_prompt: str
    exemplars: list[Exemplar]


class DomainSet(BaseModel):
    version: str
    domains: dict[str, DomainPrompt]

    def sha256(self) -> str:
        return content_key(self.model_dump(), length=64)


def load_domains(path: Path | None) -> DomainSet:
    """The routed prompts per domain (default: the packaged set); errors name the file and
    the field."""
    path = path or PACKAGED_DOMAINS
    data = read_json(path, what="CDR domains file")
    if isinstance(data, dict):
        data.pop("note", None)
    domains: DomainSet = validate(DomainSet, data, path)
    missing = [d for d in DOMAINS if d not in domains.domains]
    if missing:
        raise InputDataError(f"CDR domains file {path}: missing domains {missing}")
    return domains


class SystemPrompts(BaseModel):
    """The packaged per-side system prompts file (its version and note are not needed)."""

    prompts: dict[str, str]


def packaged_system_prompts() -> dict[str, str]:
    """The packaged per-side system prompts by name (``criteria``, ``contrary``)."""
    return dict(validate(SystemPrompts, read_json(SYSTEM_PROMPTS), SYSTEM_PROMPTS).prompts)


def system_text(value: str | None) -> str | None:
    """A ``strong_system`` / ``weak_system`` setting as text: a packaged name is looked up,
    any other string is the prompt itself; None stays None (plain T(x))."""
    if value is None:
        return None
    return packaged_system_prompts().get(value, value)


def with_system(context: list[Message], system: str | None) -> list[Message]:
    """``context`` with ``system`` as its system turn (before an existing one's text)."""
    if system is None:
        return list(context)
    existing = [m.content for m in context if m.role == "system"]
    text = "\n\n".join([system, *existing])
    return [Message(role="system", content=text), *(m for m in context if m.role != "system")]


def prefix_reward(strong: list[float], weak: list[float], k: int) -> float:
    """Summed log-ratio over the first ``k`` response tokens of the strong model.

    A response of at most ``k`` strong tokens sums all tokens of both sides (the full ratio).
    Otherwise the weak side sums its first ``round(k * n_weak / n_strong)`` tokens, the same
    share of its own tokenisation: exactly ``k`` when both sides share a tokenizer (a same-model
    pair), and about the same text when they do not (tokens are spread evenly enough over a
    response that the cut is off by a token or so; the engines report no character offsets)."""
    if len(strong) <= k:
        return sum(strong) - sum(weak)
    k_weak = round(k * len(weak) / len(strong))
    return sum(strong[:k]) - sum(weak[:k_weak])


def parse_route(raw: str) -> str | None:
    """``[START]SAFETY[END]`` -> "SAFETY"; no tags or an unknown label -> None (caller: CHAT)."""
    m = _ROUTE.search(raw)
    return m.group(1).upper() if m else None


def route(router: Engine, queries: list[str], config: CDRConfig) -> list[tuple[str, str, bool]]:
    """(domain, raw router output, parsed?) per query."""
    template = read_template(ROUTER_TEMPLATE)
    prompts = [
        router.render_chat([Message(role="user", content=template.render(query=q))]) + "[START]"
        for q in queries
    ]
    outs = router.generate(prompts, config.router_sampling, n=1)
    result = []
    for o in outs:
        raw = "[START]" + o[0].text
        label = parse_route(raw)
        result.append((label or "CHAT", raw, label is not None))
    return result


def prompt_messages(
    context: list[Message], domain: str, domains: DomainSet, plain_chat: bool, pick: random.Random
) -> tuple[list[Message], str | None, str | None]:
    """T(x) as messages, with the system prompt id and exemplar id used (None when plain).

    The domain's criteria become the system turn and the last user turn becomes
    ``<exemplar block>\n<query>\nGood Assistant:``; earlier turns are kept as they are."""
    if domain == "CHAT" and plain_chat:
        return list(context), None, None
    spec = domains.domains[domain]
    exemplar = pick.choice(spec.exemplars)
    *earlier, last = [m for m in context if m.role != "system"]
    user = f"{exemplar.block()}\n{last.content}\nGood Assistant:"
    messages = [
        Message(role="system", content=spec.system_prompt),
        *earlier,
        Message(role="user", content=user),
    ]
    return messages, domain, exemplar.id


def provenance(
    strong: Engine, weak: Engine, config: CDRConfig, router: Engine | None
) -> dict[str, Any]:
    renderer = strong if config.template == "strong" else weak
    prov: dict[str, Any] = {
        "strong": strong.info.model_dump(),
        "weak": weak.info.model_dump(),
        "reward": config.reward,
        "prompting": config.prompting,
        "prompt_template": f"{config.template}_chat_template",
        "prompt_template_sha256": renderer.info.chat_template_sha256,
        "version": VERSION,
    }
    if config.reward == "prefix":
        prov["prefix_tokens"] = config.prefix_tokens
    for side in ("strong_system", "weak_system"):
        text = system_text(getattr(config, side))
        if text is not None:
            prov[side] = getattr(config, side)
            prov[f"{side}_sha256"] = sha256_text(text)
    if config.prompting == "routed" and router is not None:
        domains = load_domains(config.domains_file)
        prov.update(
            router=router.info.model_dump(),
            router_sampling=config.router_sampling.model_dump(),
            router_template_sha256=read_template(ROUTER_TEMPLATE).sha256,
            domains_version=domains.version,
            domains_sha256=domains.sha256(),
            plain_chat=config.plain_chat,
        )
    return prov


def score_items(
    strong: Engine,
    weak: Engine,
    config: CDRConfig,
    items: list[Item],
    router: Engine | None = None,
) -> dict[str, Verdict]:
    """CDR verdict per item key; T(x) is rendered once per context group."""
    renderer = strong if config.template == "strong" else weak
    contexts = {it.group: it.context for it in items}
    prompt_info: dict[str, dict[str, Any]] = {}
    groups = list(contexts)
    if config.prompting == "routed":
        if router is None:
            raise ValueError("prompting 'routed' needs a router engine")
        domains = load_domains(config.domains_file)
        last_user = [
            next(m.content for m in reversed(contexts[g]) if m.role == "user") for g in groups
        ]
        for g, (label, raw, parsed) in zip(groups, route(router, last_user, config), strict=True):
            messages, system_id, exemplar_id = prompt_messages(
                contexts[g], label, domains, config.plain_chat, random.Random(g)
            )
            prompt_info[g] = {
                "domain": label,
                "router_output": raw,
                "router_parsed": parsed,
                "system_prompt_id": system_id,
                "exemplar_id": exemplar_id,
                "rendered": renderer.render_chat(messages),
            }
    else:
        strong_sys, weak_sys = system_text(config.strong_system), system_text(config.weak_system)
        for g in groups:
            prompt_info[g] = {
                "rendered": renderer.render_chat(with_system(contexts[g], strong_sys))
            }
            if weak_sys != strong_sys:
                prompt_info[g]["rendered_weak"] = renderer.render_chat(
                    with_system(contexts[g], weak_sys)
                )

    scorable = [it for it in items if it.response.strip()]
    strong_requests = [
        ScoreRequest(context=prompt_info[it.group]["rendered"], continuation=it.response)
        for it in scorable
    ]
    weak_requests = [
        ScoreRequest(
            context=prompt_info[it.group].get("rendered_weak", prompt_info[it.group]["rendered"]),
            continuation=it.response,
        )
        for it in scorable
    ]
    # the prefix form needs the per-token values; they are stored only when asked for
    per_token = config.keep_token_logprobs or config.reward == "prefix"
    keys = [it.key for it in scorable]
    strong_scores = dict(
        zip(keys, score_isolating_errors(strong, strong_requests, per_token), strict=True)
    )
    weak_scores = dict(
        zip(keys, score_isolating_errors(weak, weak_requests, per_token), strict=True)
    )

    verdicts: dict[str, Verdict] = {}
    for it in items:
        if not it.response.strip():
            verdicts[it.key] = Verdict("abstain", reason="empty_response")
            continue
        s, w = strong_scores[it.key], weak_scores[it.key]
        if isinstance(s, str) or isinstance(w, str):
            reason = "; ".join(
                f"{who}: {x}" for who, x in (("strong", s), ("weak", w)) if isinstance(x, str)
            )
            verdicts[it.key] = Verdict("error", reason=reason)
            continue
        info = prompt_info[it.group]
        reward_sum = s.logprob_sum - w.logprob_sum
        reward_mean = reward_sum / s.n_tokens if s.n_tokens else 0.0
        evidence: dict[str, Any] = {
            "strong_logprob_sum": s.logprob_sum,
            "strong_n_tokens": s.n_tokens,
            "weak_logprob_sum": w.logprob_sum,
            "weak_n_tokens": w.n_tokens,
            "reward_sum": reward_sum,
            "reward_mean": reward_mean,
            "rendered_prompt_sha256": sha256_text(info["rendered"]),
            **{k: v for k, v in info.items() if k not in ("rendered", "rendered_weak")},
        }
        if "rendered_weak" in info:
            evidence["weak_rendered_prompt_sha256"] = sha256_text(info["rendered_weak"])
        if per_token and s.token_logprobs is not None and w.token_logprobs is not None:
            evidence["reward_prefix"] = prefix_reward(
                s.token_logprobs, w.token_logprobs, config.prefix_tokens
            )
        elif config.reward == "prefix":
            verdicts[it.key] = Verdict("error", reason="the engine returned no per-token log-probs")
            continue
        if config.keep_token_logprobs:
            evidence["strong_token_logprobs"] = s.token_logprobs
            evidence["weak_token_logprobs"] = w.token_logprobs
        score = evidence[f"reward_{config.reward}"]
        verdicts[it.key] = Verdict("ok", score=score, evidence=evidence)
    return verdicts


@ANNOTATORS.register(NAME)
class CDR(PointwiseAnnotator):
    """The ``annotators.cdr`` section as an annotator: strong, weak (and router) models."""

    def __init__(
        self,
        config: CDRConfig,
        models: dict[str, EngineSpec],
        settings: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(NAME)
        self.config = config
        self._models = models
        self._settings = settings if settings is not None else config.model_dump(mode="json")

    @classmethod
    def configured(cls, config: BuildConfig) -> list[PointwiseAnnotator]:
        c = config.annotators.cdr
        if not c.enabled:
            return []
        models = {
            "cdr.strong": config.engine_spec(c.strong),
            "cdr.weak": config.engine_spec(c.weak),
        }
        if c.prompting == "routed":
            models["cdr.router"] = config.engine_spec(c.router)
        return [cls(c, models, config.key_view(c))]

    def models(self) -> dict[str, EngineSpec]:
        return dict(self._models)

    def check(self) -> None:
        if self.config.prompting == "routed":
            load_domains(self.config.domains_file)

    def settings(self) -> dict[str, Any]:
        return self._settings

    def identity(self, models: dict[str, ModelRef]) -> list[object]:
        roles = ("cdr.strong", "cdr.weak", "cdr.router")
        fps = [models[r].fingerprint for r in roles if r in models]
        routed = self.config.prompting == "routed"
        domains = load_domains(self.config.domains_file).sha256() if routed else None
        identity: list[object] = [self.settings(), fps, domains, VERSION]
        # a packaged prompt is named in the settings; its text enters here (only when set,
        # so the keys of runs without per-side prompts stay as they were)
        sides = [system_text(self.config.strong_system), system_text(self.config.weak_system)]
        if any(t is not None for t in sides):
            identity.append([sha256_text(t) if t is not None else None for t in sides])
        return identity

    def score(self, items: list[Item]) -> tuple[dict[str, Verdict], dict[str, Any]]:
        from prefsynth.engines import get_engine

        strong = get_engine(self._models["cdr.strong"])
        weak = get_engine(self._models["cdr.weak"])
        router = get_engine(self._models["cdr.router"]) if "cdr.router" in self._models else None
        verdicts = score_items(strong, weak, self.config, items, router)
        return verdicts, provenance(strong, weak, self.config, router)
