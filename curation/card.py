"""Dataset card (README.md) generated from the run record (:class:`prefsynth.run_record.RunRecord`).

Why one module (over 400 lines): the card is one document rendered from one run record; its licence
derivation, sections and ``configs:`` front matter for both layouts must agree with each other,
which is easiest to check when they are written side by side.

Everything in the card comes from the run: models with file hashes and licences, sampling
parameters, template hashes, seeds, row counts per stage and per drop reason, decontamination
hits, diversity and (when the build was audited) annotator agreement. The licence is derived
from the licences of the models that wrote the text, not hard-coded, because the terms of a
generator's outputs (e.g. the Gemma Terms of Use) follow the text into the dataset.

The same run renders two layouts: the build's run folder (``data/train.parquet``, ...,
``dataset/``) and a Hub release (``data/<config>/<split>.parquet``, see
:mod:`prefsynth.curation.publish`), passed as ``release``. The front matter's ``configs:`` always
names the files of the layout it is written for, so the Hub viewer and ``load_dataset`` find them.

A card may compare the run with the previous release (``previous``: a :class:`PreviousRelease`,
that release's run record and its train pair ids). This run's train pair ids are not in run.json,
so the caller passes them as ``pair_ids`` (read from ``data/train.parquet``); without them the
rows added/removed are reported as not computed rather than guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from prefsynth.records import ModelRef
from prefsynth.run_record import RunRecord

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


#: Model licences that are not SPDX ids: the Hub wants ``license: other`` plus a name and link.
CUSTOM_LICENCES = {"gemma": "https://ai.google.dev/gemma/terms"}

#: Where the build's run folder keeps each config's files
#: (``prefsynth.curation.dataset.write_dataset``).
RUN_DATA_FILES: dict[str, dict[str, str]] = {
    "default": {"train": "data/train.parquet"},
    "sft": {"train": "data/sft.parquet"},
    "dropped_pairs": {"train": "data/dropped_pairs.parquet"},
}

ROW_FIGURES = ("pairs_kept", "pairs_dropped", "instructions_kept")


@dataclass(frozen=True)
class ReleaseLayout:
    """What a Hub release holds, so its card names the right files and split sizes.

    ``data_files``: config -> split -> path relative to the release folder; ``rows``: config ->
    split -> row count.
    """

    data_files: dict[str, dict[str, str]]
    rows: dict[str, dict[str, int]]
    test_size: float
    split_seed: int


@dataclass(frozen=True)
class PreviousRelease:
    """The release a card compares with: its run record and its train pair ids (None when its
    data file is gone)."""

    run: RunRecord
    pair_ids: list[str] | None = None


# --------------------------------------------------------------------------- licence


def text_roles(models: dict[str, ModelRef]) -> list[str]:
    """Roles whose model wrote text that ends up in the data (scorers only produce numbers)."""
    return [r for r in models if r == "instructions" or r.startswith("responses")]


def derive_license(models: dict[str, ModelRef], text_roles: list[str]) -> str:
    """Licence of the text: the licence shared by every model that wrote text, else 'other'."""
    licences = {m.license if (m := models.get(role)) else None for role in text_roles}
    if len(licences) == 1 and None not in licences:
        return str(next(iter(licences)))
    return "other"


def _custom(name: str) -> dict[str, str]:
    return {"license": "other", "license_name": name, "license_link": CUSTOM_LICENCES[name]}


def _describe(models: dict[str, ModelRef], roles: list[str]) -> str:
    return ", ".join(
        f"{role} `{models[role].model_id}` ({models[role].license or 'unknown'})" for role in roles
    )


def license_front_matter(
    models: dict[str, ModelRef], override: str | None = None
) -> tuple[dict[str, str], str]:
    """Front-matter licence fields and a sentence explaining them.

    An override (``publish.license``) wins. Otherwise: any Gemma-written text puts the data
    under the Gemma Terms of Use; one shared licence among the text models is the licence;
    mixed or unknown licences give ``other`` and the sentence lists each model's.
    """
    roles = text_roles(models)
    scorers = [r for r in models if r not in roles]
    text = _describe(models, roles) or "none recorded"
    scorer_text = (
        f" Scorer licences (they produce numbers, not text, so do not constrain it): "
        f"{_describe(models, scorers)}."
        if scorers
        else ""
    )
    licences = [models[r].license or None for r in roles]
    if override:
        fields = _custom(override) if override in CUSTOM_LICENCES else {"license": override}
        return fields, f"Licence `{override}` set by the publisher. Text models: {text}." + (
            scorer_text
        )
    if "gemma" in licences:
        return _custom("gemma"), (
            "Text written by Gemma models is subject to the Gemma Terms of Use "
            f"({CUSTOM_LICENCES['gemma']}). Text models: {text}.{scorer_text}"
        )
    shared = derive_license(models, roles)
    if shared != "other":
        fields = _custom(shared) if shared in CUSTOM_LICENCES else {"license": shared}
        return fields, f"All text was written by `{shared}` models: {text}.{scorer_text}"
    return {"license": "other"}, (
        f"The text models have different or unknown licences; each applies to its text: "
        f"{text}.{scorer_text}"
    )


# --------------------------------------------------------------------------- helpers


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _change(before: Any, now: Any) -> str:
    if not (_is_number(before) and _is_number(now)):
        return "n/a"
    delta = now - before
    return f"{delta:+d}" if isinstance(delta, int) else f"{delta:+.4g}"


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def configs_front_matter(data_files: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """The Hub's ``configs:`` list (datasets-manual-configuration) for config -> split -> path."""
    return [
        {
            "config_name": name,
            "data_files": [{"split": split, "path": path} for split, path in splits.items()],
        }
        for name, splits in data_files.items()
    ]


def _front_matter(run: RunRecord, layout: ReleaseLayout | None) -> tuple[dict[str, Any], str]:
    licence, licence_note = license_front_matter(run.models, run.publish_config.get("license"))
    data_files = layout.data_files if layout else RUN_DATA_FILES
    front = {
        **licence,
        "language": ["en"],
        "tags": ["synthetic", "preference", "dpo", "prefsynth"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(run.rows.pairs_kept if run.rows else 0)],
        "pretty_name": f"prefsynth {run.run_id}",
        "configs": configs_front_matter(data_files),
    }
    return front, licence_note


# --------------------------------------------------------------------------- sections


def _sampling(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every sampling block of the parts of the config the build used (path -> params)."""
    ins = cfg.get("instructions", {})
    styles = list(ins.get("mix", {})) if ins.get("style") == "mix" else [ins.get("style")]
    found: dict[str, Any] = {}
    for style in styles:
        _collect_sampling(ins.get(style, {}), f"instructions.{style}", found)
    _collect_sampling(cfg.get("responses", {}), "responses", found)
    for name, ann in (cfg.get("annotators") or {}).items():
        if isinstance(ann, dict) and ann.get("enabled"):
            _collect_sampling(ann, f"annotators.{name}", found)
    return found


def _collect_sampling(node: Any, path: str, found: dict[str, Any]) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _collect_sampling(item, f"{path}[{i}]", found)
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if (key == "sampling" or key.endswith("_sampling")) and isinstance(value, dict):
            found[f"{path}.{key}"] = value
        else:
            _collect_sampling(value, f"{path}.{key}", found)


def _sampling_table(blocks: dict[str, dict[str, Any]]) -> str:
    """One row per sampling block, one column per parameter (lists as JSON)."""
    if not blocks:
        return "No sampling parameters recorded."
    columns: list[str] = []
    for params in blocks.values():
        columns += [k for k in params if k not in columns]
    rows = [
        [
            path,
            *(
                json.dumps(params.get(c))
                if isinstance(params.get(c), list)
                else _fmt(params.get(c))
                for c in columns
            ),
        ]
        for path, params in blocks.items()
    ]
    return _table(["sampling", *columns], rows)


def _models_section(run: RunRecord, licence_note: str) -> list[str]:
    rows = [
        [role, m.model_id, m.backend, m.dtype, m.license or "unknown", m.sha256 or m.fingerprint]
        for role, m in run.models.items()
    ]
    header = ["role", "model", "backend", "dtype", "licence", "sha256 / fingerprint"]
    return ["## Models", "", _table(header, rows), "", licence_note, ""]


def _sampling_section(run: RunRecord, layout: ReleaseLayout | None) -> list[str]:
    cfg = run.config
    seeds: dict[str, Any] = {"build seed": cfg.get("seed")}
    if layout is not None:
        seeds["split seed"] = layout.split_seed
    templates = run.templates
    return [
        "## Sampling, seeds and prompt templates",
        "",
        "Seeds: "
        + ", ".join(f"{k} `{v}`" for k, v in seeds.items())
        + ". A sampling `seed` shown as n/a is derived from the build seed and the shard "
        "index, so every shard is reproducible on its own.",
        "",
        _sampling_table(_sampling(cfg)),
        "",
        _table(["template", "sha256"], [[k, v] for k, v in templates.items()])
        if templates
        else "No prompt templates recorded.",
        "",
    ]


def _rows_section(run: RunRecord) -> list[str]:
    scalar: list[list[Any]] = []
    if run.rows is not None:
        scalar = [[k, v] for k, v in run.rows.scalars().items()]
        scalar += [[f"annotations_ok.{k}", v] for k, v in run.rows.annotations_ok.items()]
    stage_rows = [
        [
            name,
            s.shards,
            s.computed,
            s.reused,
            s.rows,
            s.seconds,
            ", ".join(f"{k}: {v}" for k, v in s.counts.items()),
        ]
        for name, s in run.stage_summaries().items()
    ]
    header = ["stage", "shards", "computed", "reused", "rows", "seconds", "counts"]
    return [
        "## Rows",
        "",
        _table(["rows", "count"], scalar) if scalar else "No row counts recorded.",
        "",
        "### Per stage",
        "",
        _table(header, stage_rows) if stage_rows else "No stages recorded.",
        "",
    ]


def _release_section(layout: ReleaseLayout | None) -> list[str]:
    if layout is None:
        return []
    rows = [
        [config, split, layout.rows.get(config, {}).get(split, 0), path]
        for config, splits in layout.data_files.items()
        for split, path in splits.items()
    ]
    return [
        "## Configs and splits",
        "",
        "`default` holds the kept pairs, `sft` the best response per instruction, "
        "`dropped_pairs` every dropped pair with its reason. Train and test are split by "
        f"instruction (test share {layout.test_size:g}, seed {layout.split_seed}): all pairs "
        "of an instruction land in the same split, and SFT rows of test instructions are in "
        "the `sft` test split, so no test prompt is seen in training.",
        "",
        _table(["config", "split", "rows", "file"], rows),
        "",
    ]


def _diversity_section(run: RunRecord) -> list[str]:
    diversity = run.diversity
    if diversity is None:
        return ["## Instructions: curation and diversity", "", "Not recorded.", ""]
    decontam = diversity.contaminated_by_benchmark
    figures = [[k, _fmt(v)] for k, v in diversity.numbers().items()]
    by_method = diversity.by_method
    return [
        "## Instructions: curation and diversity",
        "",
        f"Kept {diversity.kept} of {diversity.instructions} instructions: "
        f"{diversity.failed} failed generation, {diversity.duplicates} "
        f"duplicates, {diversity.contaminated} close to an evaluation prompt.",
        "",
        _table(["benchmark", "contaminated instructions"], [[b, n] for b, n in decontam.items()])
        if decontam
        else "Decontamination hits by benchmark: none.",
        "",
        _table(["figure", "value"], figures) if figures else "",
        "",
        _table(["method", "instructions kept"], [[m, n] for m, n in by_method.items()])
        if by_method
        else "",
        "",
    ]


VOTING_FIGURES = (
    "kept",
    "flipped",
    "dropped",
    "judged_pairs",
    "judge_abstained",
    "position_consistency",
    "a_pick_rate",
    "canary_pairs",
    "canary_null_preferred_rate",
    "injection_pairs",
    "injection_flipped",
    "injection_changed_rate",
    "injection_mean_shift",
)


def _calibration_lines(run: RunRecord) -> list[str]:
    """The calibration file the vote used, if any: its source, size and reported accuracy."""
    cal = run.voting.calibration if run.voting else None
    if cal is None:
        return []
    lo, hi = cal.cv_interval
    weights = ", ".join(f"{k} {v:+.3f}" for k, v in cal.weights.items())
    lines = [
        "### Calibration",
        "",
        f"The vote is calibrated on human labels (`prefsynth calibrate`): mu = 2p - 1 with "
        f"p = sigmoid(w . z), fitted on **{cal.n}** human-labelled pairs of `{cal.source}`.",
        "",
        f"- calibration file: `{cal.file}` (sha256 `{cal.sha256}`)",
        f"- source pairs sha256: `{cal.source_sha256}`",
        f"- cross-validated accuracy: **{cal.cv_accuracy:.3f}** (95% interval "
        f"{lo:.3f}-{hi:.3f}); above its threshold |2p - 1| >= {cal.min_confidence:.3f}: "
        f"{cal.cv_accuracy_kept:.3f}",
        f"- weights on the standardised margins: {weights}",
    ]
    if cal.config_mismatch:
        lines.append(
            f"- warning: annotators {cal.config_mismatch} ran with another config than the "
            "calibration's evaluation, so its accuracy may not hold for this dataset"
        )
    return [*lines, ""]


def _style_lines(run: RunRecord) -> list[str]:
    """Each instruction style's share of the instructions and its share of usable ones."""
    styles = run.instruction_styles
    if not styles:
        return []
    parts = []
    for method, c in styles.items():
        failed = ", ".join(f"{k} {v}" for k, v in c.failed_by_reason.items())
        parts.append(
            f"`{method}` {c.written} ({c.share_of_instructions or 0:.0%} of instructions), "
            f"{c.usable} usable ({c.usable_share or 0:.0%})"
            + (f"; failed: {failed}" if failed else "")
        )
    return ["- instruction styles: " + "; ".join(parts)]


def _gate_lines(run: RunRecord) -> list[str]:
    """The response gate's counts by reason, and what flagged responses may become."""
    gate = run.response_gate
    if gate is None:
        return ["- response gate: off (`gate.enabled: false`); any response may be chosen"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(gate.by_reason.items())) or "none"
    role = "may be rejected, never chosen" if gate.flagged_as_rejected else "enter no pair"
    return [
        f"- response gate: {gate.flagged} of {gate.checked} responses flagged ({reasons}); "
        f"flagged responses {role}. Kept pairs with a flagged rejected response: "
        f"{gate.kept_with_flagged_rejected}; with a flagged chosen one: "
        f"{gate.kept_with_flagged_chosen}"
    ]


def _margin_scale(run: RunRecord) -> float:
    """The ``dataset.margin_scale`` the run wrote ``margin`` with (1 before the setting)."""
    return float((run.config.get("dataset") or {}).get("margin_scale", 1.0))


def _voting_section(run: RunRecord) -> list[str]:
    voting = run.voting
    dropped = run.rows.dropped_by_reason if run.rows else {}
    drop_rows = [[k, v] for k, v in sorted(dropped.items())]
    figures = [[k, _fmt(getattr(voting, k))] for k in VOTING_FIGURES] if voting else []
    return [
        "## Preference strength and filtering",
        "",
        "Every annotator is a voter; margins are standardised per annotator "
        f"({(voting and voting.standardisation) or 'n/a'}), then mu = mean, sigma = population "
        "standard deviation. `margin` in the data is "
        f"{_margin_scale(run)} x mu (`dataset.margin_scale`; TRL's RewardTrainer subtracts it "
        "inside its loss, -log sigmoid(r_chosen - r_rejected - margin)); `mu` is the vote "
        "itself and `margin_<annotator>` are the standardised margins.",
        "",
        _table(["figure", "value"], figures) if figures else "",
        "",
        "Filter thresholds: `" + json.dumps(voting.thresholds if voting else {}) + "`",
        "",
        *_calibration_lines(run),
        "## Dropped pairs by reason",
        "",
        _table(["reason", "pairs"], drop_rows) if drop_rows else "None.",
        "",
    ]


def _audit_section(run: RunRecord, layout: ReleaseLayout | None) -> list[str]:
    if run.audit is None:
        return []
    lines = [
        "## Annotator agreement",
        "",
        _table(["figure", "value"], [[k, _fmt(v)] for k, v in run.audit.headline.items()]),
        "",
    ]
    report = run.audit.report
    if report:
        where = (
            f"`{report}` in the build's run folder `{run.run_id}`"
            if layout is not None  # the release uploads only the card and data/
            else f"[{report}]({report})"
        )
        lines += [f"Full audit report: {where}.", ""]
    return lines


def _headline(run: RunRecord) -> dict[str, Any]:
    """The figures a comparison between releases shows, flattened to name -> value."""
    rows = run.rows.scalars() if run.rows else {}
    figures: dict[str, Any] = {k: rows.get(k) for k in ROW_FIGURES}
    if run.audit is not None:
        figures |= {f"audit.{k}": v for k, v in run.audit.headline.items()}
    if run.diversity is not None:
        figures |= {f"diversity.{k}": v for k, v in run.diversity.numbers().items()}
    return figures


def _comparison_section(
    run: RunRecord, previous: PreviousRelease | None, pair_ids: list[str] | None
) -> list[str]:
    if previous is None:
        return []
    before, now = _headline(previous.run), _headline(run)
    names = list(before) + [k for k in now if k not in before]
    table = [
        [k, _fmt(before.get(k)), _fmt(now.get(k)), _change(before.get(k), now.get(k))]
        for k in names
    ]
    prev_ids = previous.pair_ids
    if pair_ids is None or prev_ids is None:
        diff = "Rows added/removed: not computed (pair ids not given)."
    else:
        old, new = set(prev_ids), set(pair_ids)
        diff = (
            f"Kept pairs, by `pair_id`: **{len(new - old)} added**, **{len(old - new)} "
            f"removed**, {len(new & old)} unchanged."
        )
    return [
        "## Changes since the previous release",
        "",
        f"Previous release: `{previous.run.run_id}` (finished {previous.run.finished_at}).",
        "",
        diff,
        "",
        _table(["figure", "previous", "now", "change"], table),
        "",
    ]


def _usage_section(run: RunRecord, repo: str | None, layout: ReleaseLayout | None) -> list[str]:
    has_test = layout is not None and "test" in layout.data_files.get("default", {})
    revision = run.publish_config.get("revision")
    if repo:
        rev = f', revision="{revision}"' if revision else ""
        loader, load = "load_dataset", f'ds = load_dataset("{repo}", "default"{rev})'
    elif layout is not None:
        files = ", ".join(f'"{s}": "{p}"' for s, p in layout.data_files["default"].items())
        loader, load = "load_dataset", f'ds = load_dataset("parquet", data_files={{{files}}})'
    else:
        loader, load = "load_from_disk", f'ds = load_from_disk("{run.run_id}/dataset")'
    eval_arg = ', eval_dataset=ds["test"]' if has_test else ""
    return [
        "## Use with TRL",
        "",
        "```python",
        f"from datasets import {loader}",
        "from trl import DPOConfig, DPOTrainer",
        "",
        load,
        'trainer = DPOTrainer(model=model, args=DPOConfig(output_dir="dpo"), '
        f'train_dataset=ds["train"]{eval_arg}, processing_class=tokenizer)',
        "```",
        "",
    ]


def _methods_section(run: RunRecord) -> list[str]:
    annotators = run.config.get("annotators") or {}
    used = set(run.diversity.by_method) if run.diversity else set()
    used |= {n for n in ("cdr", "flr", "judge") if (annotators.get(n) or {}).get("enabled")}
    if run.voting is not None:
        used.add("voting")
    return [
        "## Methods",
        "",
        *[f"- {CITATIONS[m]}" for m in CITATIONS if m in used],
        "",
        "The full build config, package versions and timings are in `run.json`.",
        "",
    ]


# --------------------------------------------------------------------------- card


def render_card(
    run: RunRecord,
    previous: PreviousRelease | None = None,
    repo: str | None = None,
    *,
    pair_ids: list[str] | None = None,
    release: ReleaseLayout | None = None,
) -> str:
    """The dataset card for a run.

    ``previous``: the previous release (its run record and train pair ids) for the comparison
    section; ``pair_ids``: this run's train pair ids (not in run.json; read them
    from ``data/train.parquet``); ``repo``: the Hub repo, for the usage snippet; ``release``:
    render for a release folder instead of the build's run folder.
    """
    rows = run.rows
    front, licence_note = _front_matter(run, release)
    intro = [
        f"# prefsynth preference dataset `{run.run_id}`",
        "",
        "Synthetic preference pairs in TRL's conversational format (`prompt`, `chosen`, "
        "`rejected`), built by prefsynth "
        f"{run.prefsynth_version}. Every row carries the ids of its instruction and "
        f"responses; `margin` is {_margin_scale(run)} x the preference strength mu (mean of "
        "the annotators' standardised margins; TRL's reward-margin column), `sigma` its "
        "uncertainty, `margin_<annotator>` each voter's.",
        "",
        f"- kept pairs: **{rows.pairs_kept if rows else 0}**; dropped pairs: "
        f"{rows.pairs_dropped if rows else 0} (config `dropped_pairs`)",
        f"- instructions: {rows.instructions if rows else 0} written, "
        f"{rows.instructions_ok if rows else 0} usable; responses: {rows.responses if rows else 0} "
        f"({run.responses_cut_by_length or 0:.1%} cut by the length limit)",
        *_style_lines(run),
        *_gate_lines(run),
        f"- licence: `{front['license']}`"
        + (f" ({front['license_name']})" if "license_name" in front else "")
        + " (from the models that wrote the text; see Models)",
        "",
    ]
    parts = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        *intro,
        *_release_section(release),
        *_comparison_section(run, previous, pair_ids),
        *_models_section(run, licence_note),
        *_sampling_section(run, release),
        *_rows_section(run),
        *_diversity_section(run),
        *_voting_section(run),
        *_audit_section(run, release),
        *_usage_section(run, repo, release),
        *_methods_section(run),
    ]
    return "\n".join(parts)
