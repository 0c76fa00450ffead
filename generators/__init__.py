"""Instruction and response generators: one module per method, no orchestration.

* :mod:`prefsynth.generators.seed_instructions` — Self-Instruct style, from seed tasks;
* :mod:`prefsynth.generators.skillmix` — Instruct-SkillMix (skills, then k-skill instructions);
* :mod:`prefsynth.generators.pika` — PiKa (expert personas, one instruction each);
* :mod:`prefsynth.generators.responses` — n sampled responses per instruction per policy;
* :mod:`prefsynth.generators.prompts` and :mod:`prefsynth.generators.parsing` — templates and
  the parsers of the model's replies.
"""

if __name__ != "prefsynth.generators":  # the folder is importable from the repository root
    raise ImportError(
        f"import prefsynth.generators, not {__name__}: the package lives in the prefsynth namespace"
    )
