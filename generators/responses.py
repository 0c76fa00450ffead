"""Response sampling: n completions per instruction from the policy, or a policy mixture.

Each policy gets the whole shard in one ``generate`` call (vLLM schedules it as one batch; the
transformers backend sorts it by length and batches it), with every sampling parameter explicit
and the shard's derived seed recorded in each response. With a mixture, every instruction gets
the same number of responses from each policy (its share of n, largest remainder).

When the instruction's generator also wrote an answer (Instruct-SkillMix keeps it as a
reference), that answer joins the candidates as one more response with ``origin="reference"``
and the generator's provenance, so the annotators can rank it against the policy's samples.
"""

from __future__ import annotations

from prefsynth.engines import Engine

from prefsynth.records import (
    GenerationProvenance,
    Instruction,
    Message,
    ModelRef,
    Response,
    SamplingParams,
)

VERSION = "2"


def sample_shard(
    policies: list[tuple[Engine, SamplingParams, int]],
    instructions: list[Instruction],
    seed: int,
    code_version: str,
) -> list[Response]:
    usable = [i for i in instructions if i.status == "ok" and i.text]
    chats = [[Message(role="user", content=i.text or "")] for i in usable]
    responses: list[Response] = []
    first_index = 0
    for p, (engine, sampling, count) in enumerate(policies):
        params = sampling.model_copy(update={"seed": seed + p})
        outputs = engine.generate(chats, params, n=count)
        provenance = GenerationProvenance(
            model=ModelRef(**engine.info.model_dump()),
            template_id="chat:" + engine.info.model_id,
            template_sha256=engine.info.chat_template_sha256,
            sampling=params,
            seed=seed + p,
            code_version=code_version,
        )
        for instruction, completions in zip(usable, outputs, strict=True):
            for j, c in enumerate(completions, start=first_index):
                responses.append(
                    Response(
                        response_id=Response.make_id(
                            instruction.instruction_id, j, engine.info.fingerprint
                        ),
                        instruction_id=instruction.instruction_id,
                        index=j,
                        text=c.text,
                        finish_reason=c.finish_reason,
                        n_tokens=c.n_tokens,
                        n_chars=len(c.text),
                        provenance=provenance,
                    )
                )
        first_index += count
    for instruction in usable:
        reference = instruction.source.get("reference_response")
        if reference:
            responses.append(
                Response(
                    response_id=Response.make_id(instruction.instruction_id, first_index, "ref"),
                    instruction_id=instruction.instruction_id,
                    index=first_index,
                    text=reference,
                    origin="reference",
                    finish_reason="stop",
                    n_tokens=0,
                    n_chars=len(reference),
                    provenance=instruction.provenance,
                )
            )
    return sorted(responses, key=lambda r: (r.instruction_id, r.index))
