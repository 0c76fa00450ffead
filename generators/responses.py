"""Response sampling: n completions per instruction from the policy engine.

The whole shard goes to the engine in one ``generate`` call (vLLM schedules it as one batch;
the transformers backend sorts it by length and batches it), with every sampling parameter
explicit and the shard's derived seed recorded in each response.
"""

from __future__ import annotations

from engines import Engine
from prefsynth.config import ResponsesConfig
from prefsynth.records import GenerationProvenance, Instruction, Message, ModelRef, Response

VERSION = "1"


def sample_shard(
    engine: Engine,
    config: ResponsesConfig,
    instructions: list[Instruction],
    seed: int,
    code_version: str,
) -> list[Response]:
    usable = [i for i in instructions if i.status == "ok" and i.text]
    params = config.sampling.model_copy(update={"seed": seed})
    chats = [[Message(role="user", content=i.text or "")] for i in usable]
    outputs = engine.generate(chats, params, n=config.n)
    provenance = GenerationProvenance(
        model=ModelRef(**engine.info.model_dump()),
        template_id="chat:" + engine.info.model_id,
        template_sha256=engine.info.chat_template_sha256,
        sampling=params,
        seed=seed,
        code_version=code_version,
    )
    responses = []
    for instruction, completions in zip(usable, outputs, strict=True):
        for j, c in enumerate(completions):
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
    return responses
