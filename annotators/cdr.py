"""CDR: reward = log pi_strong(y | T(x)) - log pi_weak(y | T(x))  (METHODS §3.1).

Both models are conditioned on the *same* rendered prompt T(x): the conversation rendered with
the strong model's chat template (as the paper code does), passed to both engines as a string.
Each model tokenises the response with its own tokenizer; only response tokens are summed
(prompt and padding are never counted). ``reward="sum"`` is the paper code's summed ratio;
``"mean"`` divides by the strong model's response token count (reward_hub's default). Both are
kept in the evidence; ``score`` holds the configured one.
"""

from __future__ import annotations

from annotators.base import score_isolating_errors
from engines import Engine, ScoreRequest
from prefsynth.config import CDRConfig
from prefsynth.hashing import sha256_text
from prefsynth.records import Annotation, Instruction, Message, Response

NAME = "cdr"
VERSION = "1"


def annotate_shard(
    strong: Engine,
    weak: Engine,
    config: CDRConfig,
    instructions: list[Instruction],
    responses: list[Response],
    config_key: str,
) -> list[Annotation]:
    by_id = {i.instruction_id: i for i in instructions}
    rendered: dict[str, str] = {}
    for i in instructions:
        if i.text:
            rendered[i.instruction_id] = strong.render_chat([Message(role="user", content=i.text)])
    scorable = [r for r in responses if r.text.strip() and r.instruction_id in rendered]
    requests = [
        ScoreRequest(context=rendered[r.instruction_id], continuation=r.text) for r in scorable
    ]
    strong_scores = dict(
        zip(
            (r.response_id for r in scorable), score_isolating_errors(strong, requests), strict=True
        )
    )
    weak_scores = dict(
        zip((r.response_id for r in scorable), score_isolating_errors(weak, requests), strict=True)
    )
    provenance = {
        "strong": strong.info.model_dump(),
        "weak": weak.info.model_dump(),
        "reward": config.reward,
        "prompt_template": "strong_chat_template",
        "prompt_template_sha256": strong.info.chat_template_sha256,
        "version": VERSION,
    }
    out = []
    for r in responses:
        common = {
            "annotation_id": Annotation.make_id(NAME, r.response_id, config_key),
            "annotator": NAME,
            "instruction_id": r.instruction_id,
            "response_id": r.response_id,
            "provenance": provenance,
        }
        if r.instruction_id not in by_id or r.instruction_id not in rendered:
            out.append(Annotation(**common, status="error", reason="instruction_not_found"))
            continue
        if not r.text.strip():
            out.append(Annotation(**common, status="abstain", reason="empty_response"))
            continue
        s, w = strong_scores[r.response_id], weak_scores[r.response_id]
        if isinstance(s, str) or isinstance(w, str):
            reason = "; ".join(
                f"{who}: {x}" for who, x in (("strong", s), ("weak", w)) if isinstance(x, str)
            )
            out.append(Annotation(**common, status="error", reason=reason))
            continue
        reward_sum = s.logprob_sum - w.logprob_sum
        reward_mean = reward_sum / s.n_tokens if s.n_tokens else 0.0
        out.append(
            Annotation(
                **common,
                score=reward_sum if config.reward == "sum" else reward_mean,
                status="ok",
                evidence={
                    "strong_logprob_sum": s.logprob_sum,
                    "strong_n_tokens": s.n_tokens,
                    "weak_logprob_sum": w.logprob_sum,
                    "weak_n_tokens": w.n_tokens,
                    "reward_sum": reward_sum,
                    "reward_mean": reward_mean,
                    "rendered_prompt_sha256": sha256_text(rendered[r.instruction_id]),
                },
            )
        )
    return out
