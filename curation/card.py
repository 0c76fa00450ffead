"""Dataset card (README.md) generated from the run record (run.json).

Everything in the card comes from the run: models with file hashes and licences, sampling
parameters, template hashes, seeds, row counts per stage and per drop reason. The licence is
derived from the licences of the models that wrote the text, not hard-coded.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

CITATIONS = {
    "instruct_skillmix": (
        "Kaur, Park, Goyal, Arora 2024, Instruct-SkillMix: A Powerful Pipeline for LLM "
        "Instruction Tuning. arXiv:2408.14774"
    ),
    "pika": (
        "Yin et al. 2025, PiKa: Expert-Level Synthetic Datasets for Post-Training Alignment "
        "from Scratch. arXiv:2510.06670"
    ),
    "seed_self_instruct": (
        "Wang et al. 2023, Self-Instruct: Aligning Language Models with Self-Generated "
        "Instructions. arXiv:2212.10560"
    ),
    "flr": (
        "Zhang et al. 2025, Aligning Language Models Using Follow-up Likelihood as Reward "
        "Signal. arXiv:2409.13948"
    ),
    "judge": (
        "Zheng et al. 2023, Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena "
        "(arXiv:2306.05685); Lin et al. 2024, WildBench (arXiv:2406.04770)"
    ),
    "voting": (
        "Wang et al. 2024, Secrets of RLHF in Large Language Models Part II: Reward Modeling "
        "(arXiv:2401.06080); Coste et al. 2024, Reward Model Ensembles Help Mitigate "
        "Overoptimization (arXiv:2310.02743)"
    ),
    "cdr": (
        "Xu et al. 2024, CDR / Dr. SoW: Density Ratio of Strong-over-weak LLMs for Reducing "
        "the Cost of Human Annotation in Preference Tuning. arXiv:2411.02481"
    ),
}


def derive_license(models: dict[str, dict[str, Any]], text_roles: list[str]) -> str:
    """Licence of the text: the licence shared by every model that wrote text, else 'other'."""
    licences = {(models.get(role) or {}).get("license") for role in text_roles}
    if len(licences) == 1 and None not in licences:
        return str(next(iter(licences)))
    return "other"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def render_card(run: dict[str, Any]) -> str:
    models: dict[str, dict[str, Any]] = run.get("models", {})
    text_roles = [r for r in models if r == "instructions" or r.startswith("responses")]
    licence = derive_license(models, text_roles)
    rows = run.get("rows", {})
    front = {
        "license": licence,
        "language": ["en"],
        "tags": ["synthetic", "preference", "dpo", "prefsynth"],
        "task_categories": ["text-generation"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "data/train.parquet"}],
            },
            {"config_name": "sft", "data_files": [{"split": "train", "path": "data/sft.parquet"}]},
            {
                "config_name": "dropped_pairs",
                "data_files": [{"split": "train", "path": "data/dropped_pairs.parquet"}],
            },
        ],
    }
    cfg = run.get("config", {})
    model_rows = [
        [
            role,
            m.get("model_id"),
            m.get("backend"),
            m.get("dtype"),
            m.get("license") or "unknown",
            (m.get("sha256") or m.get("fingerprint") or "")[:16],
        ]
        for role, m in models.items()
    ]
    stage_rows = [
        [name, s.get("shards"), s.get("computed"), s.get("reused"), s.get("rows"), s.get("seconds")]
        for name, s in run.get("stages", {}).items()
        if "shards" in s
    ]
    drop_rows = [[k, v] for k, v in sorted(rows.get("dropped_by_reason", {}).items())]
    ins_cfg = cfg.get("instructions", {})
    styles = (
        list(ins_cfg.get("mix", {})) if ins_cfg.get("style") == "mix" else [ins_cfg.get("style")]
    )
    sampling = {f"instructions.{st}": ins_cfg.get(st, {}).get("sampling") for st in styles}
    sampling["responses"] = cfg.get("responses", {}).get("sampling")
    if cfg.get("responses", {}).get("mixture"):
        sampling["responses.mixture"] = cfg["responses"]["mixture"]
    diversity = run.get("diversity", {})
    voting = run.get("voting", {})
    annotators_cfg = cfg.get("annotators", {})
    used = set(diversity.get("by_method", {}))
    used |= {n for n in ("cdr", "flr", "judge") if annotators_cfg.get(n, {}).get("enabled")}
    if voting:
        used.add("voting")
    methods = [m for m in CITATIONS if m in used]
    decontam = diversity.get("contaminated_by_benchmark", {})
    figures = {
        k: v for k, v in diversity.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    parts = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# prefsynth preference dataset `{run.get('run_id')}`",
        "",
        "Synthetic preference pairs in TRL's conversational format (`prompt`, `chosen`, "
        "`rejected`), built by prefsynth "
        f"{run.get('prefsynth_version')}. Every row carries the ids of its instruction and "
        "responses; `margin` is the preference strength mu (mean of the annotators' "
        "standardised margins), `sigma` its uncertainty, `margin_<annotator>` each voter's.",
        "",
        f"- kept pairs (train): **{rows.get('pairs_kept', 0)}**; dropped pairs: "
        f"{rows.get('pairs_dropped', 0)} (in `data/dropped_pairs.parquet`)",
        f"- instructions: {rows.get('instructions', 0)} written, {rows.get('instructions_ok', 0)} "
        f"usable; responses: {rows.get('responses', 0)} "
        f"({run.get('responses_cut_by_length', 0):.1%} cut by the length limit)",
        f"- licence: `{licence}` (from the models that wrote the text; scorer licences below)",
        "",
        "## Models",
        "",
        _table(
            ["role", "model", "backend", "dtype", "licence", "sha256 / fingerprint"], model_rows
        ),
        "",
        "## Sampling and seeds",
        "",
        "```json",
        json.dumps({"seed": cfg.get("seed"), **sampling}, indent=2),
        "```",
        "",
        "Prompt templates (sha256): "
        + ", ".join(f"`{k}` {v[:16]}" for k, v in run.get("templates", {}).items()),
        "",
        "## Stages",
        "",
        _table(["stage", "shards", "computed", "reused", "rows", "seconds"], stage_rows),
        "",
        "## Instructions: curation and diversity",
        "",
        f"Kept {diversity.get('kept', '?')} of {diversity.get('instructions', '?')} instructions: "
        f"{diversity.get('failed', 0)} failed generation, {diversity.get('duplicates', 0)} "
        f"duplicates, {diversity.get('contaminated', 0)} close to an evaluation prompt "
        + (
            "(" + ", ".join(f"{b}: {n}" for b, n in decontam.items()) + ")."
            if decontam
            else "(none)."
        ),
        "",
        _table(["figure", "value"], [[k, _fmt(v)] for k, v in figures.items()]) if figures else "",
        "",
        "## Preference strength and filtering",
        "",
        "Every annotator is a voter; margins are standardised per annotator "
        f"({voting.get('standardisation', 'n/a')}), then mu = mean, sigma = population "
        "standard deviation. `margin` in the data is mu; `margin_<annotator>` are the "
        "standardised margins.",
        "",
        _table(
            ["figure", "value"],
            [
                [k, _fmt(voting.get(k))]
                for k in (
                    "kept",
                    "flipped",
                    "dropped",
                    "judged_pairs",
                    "judge_abstained",
                    "position_consistency",
                    "a_pick_rate",
                    "canary_pairs",
                    "canary_null_preferred_rate",
                )
                if k in voting
            ],
        )
        if voting
        else "",
        "",
        "Filter thresholds: `" + json.dumps(voting.get("thresholds", {})) + "`",
        "",
        "## Dropped pairs by reason",
        "",
        _table(["reason", "pairs"], drop_rows) if drop_rows else "None.",
        "",
        "## Use with TRL",
        "",
        "```python",
        "from datasets import load_from_disk",
        "from trl import DPOConfig, DPOTrainer",
        "",
        f'train = load_from_disk("{run.get("run_id")}/dataset")["train"]',
        'trainer = DPOTrainer(model=model, args=DPOConfig(output_dir="dpo"), '
        "train_dataset=train, processing_class=tokenizer)",
        "```",
        "",
        "## Methods",
        "",
        *[f"- {CITATIONS[m]}" for m in methods],
        "",
        "The full build config, package versions and timings are in `run.json`.",
        "",
    ]
    return "\n".join(parts)
