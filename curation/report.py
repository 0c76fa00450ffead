"""Audit report: figures.json, PNG plots, report.md and a self-contained report.html.

Why one module (over 400 lines): the plots, the list of blocks and both renderers (Markdown and
HTML) change together whenever a figure is added, and the atomic write of the whole report is one
procedure over all of them.

The report is built once as a list of blocks (headings, tables, images) and rendered twice, so
the Markdown and the HTML always say the same thing; text from the data (annotator names,
reasons, the title) is escaped for each format rather than trusted. Every file is written to a
temporary name in the output folder and renamed into place, and the pages are written last, so
a crash leaves complete files only and never a page pointing at a half-written plot.

Plots use matplotlib's Agg canvas on a bare ``Figure`` (no pyplot), so reports can be written
from worker threads without touching global backend state.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefsynth.fileio import atomic_write_bytes, atomic_write_text

PLOTS = (
    "agreement.png",
    "strength.png",
    "length_bias.png",
    "accuracy_by_decile.png",
    "accuracy_coverage.png",
)
BASELINE = "baseline:longer"  # the length baseline among the predictors
MISSING = "n/a"


# --------------------------------------------------------------------------- values


def json_safe(value: Any) -> Any:
    """A copy with NaN/inf as None, tuples as lists, numpy scalars and paths as plain values,
    so ``json.dumps(..., allow_nan=False)`` never fails and readers never meet NaN."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array (an aggregate's fitted weights)
        return json_safe(value.tolist())
    return str(value)


def fmt(value: Any) -> str:
    """A table cell: 3 decimals for floats, "lo – hi" for intervals, n/a for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{fmt(value[0])} – {fmt(value[1])}"
    return str(value)


# --------------------------------------------------------------------------- blocks


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Block:
    """One piece of the report; exactly one of the payload fields is set."""

    heading: str | None = None
    text: str | None = None
    table: Table | None = None
    image: str | None = None
    alt: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _kv_table(pairs: list[tuple[str, Any]]) -> Table:
    return Table(["figure", "value"], [[k, fmt(v)] for k, v in pairs])


HEADLINE_LABELS = {
    "kept_share": "share of pairs kept",
    "mean_pairwise_kappa": "mean pairwise Cohen's κ (signs)",
    "fleiss_kappa": "Fleiss' κ (signs)",
    "alpha_nominal": "Krippendorff's α, nominal (signs)",
    "alpha_interval": "Krippendorff's α, interval (standardised margins)",
    "judge_position_consistency": "judge position-swap consistency",
    "judge_a_pick_rate": "judge A-pick rate",
    "length_spearman": "Spearman ρ, preference vs length difference",
    "share_chosen_longer": "share of kept pairs whose chosen is longer",
}


def _headline_blocks(figures: dict[str, Any]) -> list[Block]:
    headline = figures.get("headline") or {}
    if not headline:
        return []
    rows = [(HEADLINE_LABELS.get(k, k), v) for k, v in headline.items()]
    return [Block(heading="Headline"), Block(table=_kv_table(rows))]


def _agreement_blocks(figures: dict[str, Any], images: set[str]) -> list[Block]:
    agree = figures.get("agreement") or {}
    if not agree:
        return []
    rows = [
        [
            r["a"],
            r["b"],
            fmt(r.get("n")),
            fmt(r.get("n_ties_a")),
            fmt(r.get("n_ties_b")),
            fmt(r.get("raw_agreement")),
            fmt(r.get("cohen_kappa")),
            fmt(r.get("weighted_kappa")),
            fmt(r.get("n_kappa")),
        ]
        for r in agree.get("pairwise", [])
    ]
    header = ["A", "B", "n", "ties A", "ties B", "raw agreement", "Cohen κ", "weighted κ", "n κw"]
    overall = _kv_table(
        [
            ("annotators", ", ".join(agree.get("annotators", []))),
            ("items", agree.get("n_items")),
            ("Fleiss κ (signs)", agree.get("fleiss_kappa")),
            ("items labelled by all", agree.get("fleiss_n")),
            ("Krippendorff α nominal (signs)", agree.get("alpha_nominal")),
            ("Krippendorff α interval (RMS-standardised margins)", agree.get("alpha_interval")),
        ]
    )
    blocks = [
        Block(heading="Agreement between annotators"),
        Block(
            text="Raw agreement is over items both annotators decided (ties reported "
            "separately); Cohen's κ is nominal on signs (-1/0/+1); weighted κ is quadratic on "
            "graded strengths."
        ),
        Block(table=Table(header, rows)) if rows else Block(text="Fewer than two annotators."),
        Block(table=overall),
    ]
    if "agreement.png" in images:
        blocks.append(Block(image="agreement.png", alt="pairwise Cohen's kappa heatmap"))
    return blocks


def _judge_blocks(figures: dict[str, Any]) -> list[Block]:
    judge = figures.get("judge")
    if not judge:
        return []
    return [Block(heading="Judge"), Block(table=_kv_table(list(judge.items())))]


def _length_blocks(figures: dict[str, Any], images: set[str]) -> list[Block]:
    length = figures.get("length")
    if not length:
        return []
    items = [(k, v) for k, v in length.items() if k != "points"]
    blocks = [Block(heading="Length bias"), Block(table=_kv_table(items))]
    if "length_bias.png" in images:
        blocks.append(Block(image="length_bias.png", alt="length difference vs preference"))
    return blocks


def _strength_blocks(images: set[str]) -> list[Block]:
    if "strength.png" not in images:
        return []
    return [
        Block(heading="Preference strength"),
        Block(image="strength.png", alt="histograms of mu and sigma"),
    ]


def _filter_blocks(figures: dict[str, Any]) -> list[Block]:
    filt = figures.get("filter")
    if not filt:
        return []
    counts = [(k, v) for k, v in filt.items() if k != "dropped_by_reason"]
    reasons = filt.get("dropped_by_reason") or {}
    blocks = [Block(heading="Filter"), Block(table=_kv_table(counts))]
    if reasons:
        rows = [[reason, fmt(n)] for reason, n in reasons.items()]
        blocks.append(Block(table=Table(["drop reason", "pairs"], rows)))
    return blocks


def _gate_blocks(figures: dict[str, Any]) -> list[Block]:
    """The response gate (docs/methods.md §6.1): flagged responses by reason."""
    gate = figures.get("response_gate")
    if not gate:
        return []
    counts = [(k, v) for k, v in gate.items() if k != "by_reason"]
    blocks = [Block(heading="Response gate"), Block(table=_kv_table(counts))]
    reasons = gate.get("by_reason") or {}
    if reasons:
        rows = [[reason, fmt(n)] for reason, n in sorted(reasons.items())]
        blocks.append(Block(table=Table(["flag reason", "responses"], rows)))
    return blocks


ACCURACY_HEADER = [
    "n",
    "accuracy",
    "95% CI",
    "accuracy (decided)",
    "decided",
    "ties",
    "abstained",
    "human ties",
    "tie agreement",
]


def _accuracy_row(acc: dict[str, Any]) -> list[str]:
    keys = ["n", "accuracy", "ci95", "accuracy_decided", "n_decided", "ties", "abstained"]
    return [fmt(acc.get(k)) for k in [*keys, "human_ties", "tie_agreement"]]


def _accuracy_blocks(figures: dict[str, Any], images: set[str]) -> list[Block]:
    blocks: list[Block] = []
    acc = figures.get("accuracy") or {}
    if acc:
        rows = [[name, *_accuracy_row(a)] for name, a in acc.items()]
        blocks += [
            Block(heading="Accuracy against reference labels"),
            Block(text="Ties and abstentions count 0.5 (RewardBench); the interval is Wilson's."),
            Block(table=Table(["annotator", *ACCURACY_HEADER], rows)),
        ]
    kept_vs_all = figures.get("kept_vs_all") or {}
    if kept_vs_all:
        rows = [[name, *_accuracy_row(a)] for name, a in kept_vs_all.items()]
        blocks += [
            Block(heading="Kept pairs vs all pairs"),
            Block(table=Table(["subset", *ACCURACY_HEADER], rows)),
        ]
    if "accuracy_by_decile.png" in images:
        blocks += [
            Block(heading="Accuracy by strength decile"),
            Block(image="accuracy_by_decile.png", alt="accuracy by strength decile"),
        ]
    return blocks


def _predictor_label(name: str, figures: dict[str, Any]) -> str:
    """A predictor's name in a table: the configured vote and the length baseline marked."""
    if name == f"vote:{figures.get('aggregate')}":
        return f"{name} (configured)"
    if name == BASELINE:
        return "length baseline (longer wins)"
    return name


def _cell(point: dict[str, Any] | None) -> str:
    """Accuracy and its Wilson interval in one cell: "0.612 [0.55, 0.67]"."""
    if not point or point.get("accuracy") is None:
        return MISSING
    lo, hi = point["ci95"]
    return f"{point['accuracy']:.3f} [{lo:.2f}, {hi:.2f}]"


def _aggregate_blocks(figures: dict[str, Any]) -> list[Block]:
    aggregates = figures.get("aggregates") or {}
    if not aggregates:
        return []
    rows = [
        [
            name,
            fmt(a.get("configured")),
            fmt(a.get("voted")),
            fmt(a.get("n_compared")),
            fmt(a.get("direction_agreement")),
            fmt(a.get("spearman_strength")),
            f"skipped: {a['skipped']}" if a.get("skipped") else str(a.get("description", "")),
        ]
        for name, a in aggregates.items()
    ]
    header = [
        "aggregate",
        "configured",
        "pairs voted",
        "pairs compared",
        "same direction as configured",
        "Spearman ρ of strengths",
        "rule",
    ]
    return [
        Block(heading="Aggregates side by side"),
        Block(
            text="Every registered aggregate votes on the same margins; the configured one is "
            "the filter's. Direction = sign of mu; strength = the aggregate's own confidence "
            "(|mu| unless it says otherwise). An aggregate that needs a setting or file this "
            "config lacks is skipped with the reason."
        ),
        Block(table=Table(header, rows)),
    ]


def _coverage_blocks(figures: dict[str, Any], images: set[str]) -> list[Block]:
    curves = figures.get("accuracy_coverage") or {}
    if not curves:
        return []
    first = next(iter(curves.values()))
    header = ["predictor", *(f"{round(p['coverage'] * 100)}% (n={p['n']})" for p in first)]
    rows = [
        [_predictor_label(name, figures), *(_cell(p) for p in curve)]
        for name, curve in curves.items()
    ]
    blocks = [
        Block(heading="Accuracy against coverage"),
        Block(
            text="Each predictor keeps its strongest pairs (annotators by |margin|, aggregates "
            "by their confidence, the length baseline by |log(len first / len second)|) and is "
            "scored on the kept share; equal strengths keep the sample's order. Pairs people "
            "called a tie are left out. Cells: accuracy [95% Wilson interval]."
        ),
        Block(table=Table(header, rows)),
    ]
    if "accuracy_coverage.png" in images:
        blocks.append(Block(image="accuracy_coverage.png", alt="accuracy against coverage"))
    return blocks


def _length_control_blocks(figures: dict[str, Any]) -> list[Block]:
    control = figures.get("length_controlled") or {}
    if not control:
        return []
    rows = [
        [
            _predictor_label(name, figures),
            _cell(c.get("overall")),
            fmt((c.get("overall") or {}).get("n")),
            _cell(c.get("preferred_longer")),
            fmt((c.get("preferred_longer") or {}).get("n")),
            _cell(c.get("preferred_shorter")),
            fmt((c.get("preferred_shorter") or {}).get("n")),
            fmt(c.get("balanced")),
        ]
        for name, c in control.items()
    ]
    header = [
        "predictor",
        "all pairs",
        "n",
        "people preferred longer",
        "n",
        "people preferred shorter",
        "n",
        "balanced",
    ]
    excluded = next(iter(control.values())).get("equal_length_excluded")
    return [
        Block(heading="Accuracy controlled for length"),
        Block(
            text="Accuracy on the pairs where people preferred the longer response and on those "
            "where they preferred the shorter one; balanced is their mean. A rule that only "
            "rewards length scores 1, 0 and 0.5. Human ties and pairs of equal length "
            f"({fmt(excluded)} here) are in neither group."
        ),
        Block(table=Table(header, rows)),
    ]


def report_blocks(figures: dict[str, Any], title: str, images: set[str]) -> list[Block]:
    """The report's content in order; ``images`` are the plot files that were written."""
    blocks = [Block(heading=title, extra={"level": 1})]
    if figures.get("run_id"):
        blocks.append(Block(text=f"Run {figures['run_id']}."))
    blocks += _headline_blocks(figures)
    blocks += _accuracy_blocks(figures, images)
    blocks += _aggregate_blocks(figures)
    blocks += _coverage_blocks(figures, images)
    blocks += _length_control_blocks(figures)
    blocks += _agreement_blocks(figures, images)
    blocks += _judge_blocks(figures)
    blocks += _length_blocks(figures, images)
    blocks += _strength_blocks(images)
    blocks += _filter_blocks(figures)
    blocks += _gate_blocks(figures)
    return blocks


# --------------------------------------------------------------------------- rendering


_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|])")


def _md(text: str) -> str:
    """Escape characters that Markdown would read as markup or raw HTML."""
    return _MD_SPECIAL.sub(r"\\\1", str(text).replace("\n", " "))


def to_markdown(blocks: list[Block], with_images: bool = True) -> str:
    """Markdown rendering; images as relative links to the PNGs beside the page."""
    out: list[str] = []
    for b in blocks:
        if b.heading is not None:
            out.append("#" * b.extra.get("level", 2) + " " + _md(b.heading))
        elif b.text is not None:
            out.append(_md(b.text))
        elif b.table is not None:
            lines = ["| " + " | ".join(_md(h) for h in b.table.header) + " |"]
            lines.append("|" + "---|" * len(b.table.header))
            lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in b.table.rows]
            out.append("\n".join(lines))
        elif b.image is not None and with_images:
            out.append(f"![{_md(b.alt)}]({b.image})")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1rem 0; }
img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85rem; color: #555; }
"""


def to_html(blocks: list[Block], title: str) -> str:
    """A self-contained page (inline CSS, no scripts); images as relative <img> links."""
    e = html.escape
    body: list[str] = []
    for b in blocks:
        if b.heading is not None:
            level = b.extra.get("level", 2)
            body.append(f"<h{level}>{e(b.heading)}</h{level}>")
        elif b.text is not None:
            body.append(f"<p>{e(b.text)}</p>")
        elif b.table is not None:
            head = "".join(f"<th>{e(h)}</th>" for h in b.table.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.table.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.image is not None:
            src = e(b.image, quote=True)
            body.append(
                f'<figure><img src="{src}" alt="{e(b.alt, quote=True)}">'
                f"<figcaption>{e(b.alt)} ({src})</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float) -> Any:
    """A pyplot-free figure on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_agreement(figures: dict[str, Any]) -> bytes | None:
    """Heatmap of pairwise Cohen's kappa, each cell annotated with kappa and n."""
    import matplotlib
    import numpy as np

    agree = figures.get("agreement") or {}
    names = list(agree.get("annotators") or [])
    pairwise = agree.get("pairwise") or []
    if len(names) < 2 or not pairwise:
        return None
    index = {n: i for i, n in enumerate(names)}
    k = np.full((len(names), len(names)), np.nan)
    counts = np.zeros((len(names), len(names)), dtype=int)
    np.fill_diagonal(k, 1.0)
    for r in pairwise:
        i, j = index[r["a"]], index[r["b"]]
        value = r.get("cohen_kappa")
        k[i, j] = k[j, i] = np.nan if value is None else value
        counts[i, j] = counts[j, i] = r.get("n") or 0
    size = 2.2 + 0.9 * len(names)
    fig = _new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(k), cmap=cmap, vmin=-1, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            label = "—" if i == j else ("n/a" if np.isnan(k[i, j]) else f"{k[i, j]:.2f}")
            if i != j:
                label += f"\nn={counts[i, j]}"
            ax.text(j, i, label, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_title("Pairwise Cohen's κ (signs)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _png(fig)


def plot_strength(figures: dict[str, Any]) -> bytes | None:
    """Histograms of mu (preference strength) and sigma (disagreement) side by side."""
    from matplotlib.ticker import MaxNLocator

    strength = figures.get("strength") or {}
    hists = [(name, strength.get(name) or {}) for name in ("mu", "sigma")]
    hists = [(name, h) for name, h in hists if h.get("counts")]
    if not hists:
        return None
    fig = _new_figure(5 * len(hists), 3.6)
    axes = fig.subplots(1, len(hists), squeeze=False)[0]
    for ax, (name, h) in zip(axes, hists, strict=True):
        ax.stairs(h["counts"], h["edges"], fill=True, alpha=0.75, color="#4477aa")
        ax.set_title(f"{name} (n={h.get('n', sum(h['counts']))})")
        ax.set_xlabel(name)
        ax.set_ylabel("pairs")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def plot_length(figures: dict[str, Any]) -> bytes | None:
    """Scatter of length difference (first - second, chars) against the signed preference."""
    points = (figures.get("length") or {}).get("points") or []
    points = [p for p in points if p[0] is not None and p[1] is not None]
    if not points:
        return None
    fig = _new_figure(6, 4.2)
    ax = fig.add_subplot()
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, alpha=0.6, color="#aa3377")
    ax.axhline(0, color="#888", lw=0.8)
    ax.axvline(0, color="#888", lw=0.8)
    rho = (figures.get("length") or {}).get("spearman")
    ax.set_title(f"Length bias (Spearman ρ = {fmt(rho)})")
    ax.set_xlabel("len(chosen) - len(rejected), chars")
    ax.set_ylabel("preference for chosen (mu)")
    return _png(fig)


def plot_deciles(figures: dict[str, Any]) -> bytes | None:
    """Accuracy per strength decile, one line per annotator, with the 0.5 chance line."""
    curves = {k: v for k, v in (figures.get("accuracy_by_decile") or {}).items() if v}
    if not curves:
        return None
    fig = _new_figure(6.5, 4.2)
    ax = fig.add_subplot()
    for name, bins in curves.items():
        ax.plot([b["bin"] + 1 for b in bins], [b["accuracy"] for b in bins], marker="o", label=name)
    ax.axhline(0.5, color="#888", ls="--", lw=1, label="chance")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("strength decile (|margin|, low → high)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy by preference strength")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_coverage(figures: dict[str, Any]) -> bytes | None:
    """Accuracy of the kept share against the share kept, one line per predictor; the length
    baseline dashed, the configured vote with its 95% band, chance at 0.5."""
    curves = {k: v for k, v in (figures.get("accuracy_coverage") or {}).items() if v}
    if not curves:
        return None
    configured = f"vote:{figures.get('aggregate')}"
    fig = _new_figure(6.5, 4.2)
    ax = fig.add_subplot()
    for name, curve in curves.items():
        points = [p for p in curve if p.get("accuracy") is not None]
        x = [p["coverage"] for p in points]
        y = [p["accuracy"] for p in points]
        label = _predictor_label(name, figures)
        if name == BASELINE:
            ax.plot(x, y, color="black", ls="--", lw=1.5, label=label)
            continue
        (line,) = ax.plot(
            x, y, marker="o", ms=4, label=label, lw=2.2 if name == configured else 1.2
        )
        if name == configured:
            lo = [p["ci95"][0] for p in points]
            hi = [p["ci95"][1] for p in points]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    ax.axhline(0.5, color="#888", ls=":", lw=1, label="chance")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("coverage (share of pairs kept, strongest first)")
    ax.set_ylabel("accuracy of the kept pairs")
    ax.set_title("Accuracy against coverage")
    ax.legend(fontsize=8)
    return _png(fig)


PLOTTERS: dict[str, Callable[[dict[str, Any]], bytes | None]] = {
    "agreement.png": plot_agreement,
    "strength.png": plot_strength,
    "length_bias.png": plot_length,
    "accuracy_by_decile.png": plot_deciles,
    "accuracy_coverage.png": plot_coverage,
}


# --------------------------------------------------------------------------- writing


def write_report(out_dir: Path, figures: dict[str, Any], title: str) -> dict[str, Path]:
    """Write figures.json, the plots whose data is present, report.md and report.html.

    Returns the written paths by name ("figures", "report_md", "report_html", and each plot
    file name without ".png"). Plots left over from an earlier report whose data is now
    absent are removed, so the folder always matches its pages.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = json_safe(figures)
    # Render everything in memory first: a failing plot then leaves the folder untouched.
    text = json.dumps(clean, indent=1, ensure_ascii=False, allow_nan=False)
    pngs = {name: plot(clean) for name, plot in PLOTTERS.items()}
    images = {name for name, data in pngs.items() if data is not None}
    blocks = report_blocks(clean, title, images)
    pages = {
        "report.md": to_markdown(blocks).encode("utf-8"),
        "report.html": to_html(blocks, title).encode("utf-8"),
    }
    written = {"figures": atomic_write_text(out_dir / "figures.json", text, fsync=True)}
    for name, data in pngs.items():
        if data is not None:
            written[name.removesuffix(".png")] = atomic_write_bytes(
                out_dir / name, data, fsync=True
            )
    for name, data in pages.items():  # pages last: they only ever point at complete plots
        written[name.replace(".", "_")] = atomic_write_bytes(out_dir / name, data, fsync=True)
    for name in PLOTS:
        if name not in images and (out_dir / name).exists():
            (out_dir / name).unlink()
    return written
