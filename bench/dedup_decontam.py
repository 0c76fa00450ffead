"""Benchmark: dedup and decontamination of 20,000 instructions on this machine.

Why one module (over 400 lines): it is a standalone benchmark script; the synthetic set with planted
duplicates and copies, the timed phases and the recall report must stay together so that one file
reproduces every figure it prints.

Builds a synthetic instruction set with a known answer: base instructions are distinct by
construction (every template is used with every subject at most once, with random modifiers),
then exact, near and semantic duplicates of earlier items and copies of benchmark prompts are
planted at random later positions. Measures wall time and peak resident memory of each phase
(embedding, dedup, decontamination with a cold and a warm benchmark-embedding cache), then
reports recall on the planted items and how many unplanted items were removed, plus a small
threshold sweep (cheap: it reuses the embeddings).

    .venv/bin/python bench/dedup_decontam.py [--n 20000] [--seed 0] [--json out.json]

The cold run uses a temporary cache directory, so it re-encodes every benchmark prompt; the
default cache is left alone. Benchmark prompts are never printed (HH-RLHF is offensive by
design).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (template, paraphrase of the template or None); {s} = subject, {m} = modifier (may be "").
TEMPLATES: list[tuple[str, str | None]] = [
    ("Write a blog post about {s}{m}.", "Compose an article for a blog on the topic of {s}{m}."),
    (
        "Explain {s} to a curious teenager{m}.",
        "Describe {s} in terms a curious teenager would follow{m}.",
    ),
    (
        "Give me five surprising facts about {s}{m}.",
        "List five facts about {s} that most people would find surprising{m}.",
    ),
    ("Write a short poem about {s}{m}.", "Compose a brief piece of verse on {s}{m}."),
    (
        "What are the most common misconceptions about {s}{m}?",
        "Which mistaken beliefs about {s} do people hold most often{m}?",
    ),
    (
        "Create a quiz with four questions on {s}{m}.",
        "Make a four-question quiz that tests knowledge of {s}{m}.",
    ),
    (
        "Summarise the history of {s} in one paragraph{m}.",
        "In a single paragraph, give an overview of how {s} developed over time{m}.",
    ),
    (
        "As a journalist, draft three interview questions for an expert in {s}{m}.",
        "Imagine you are a reporter: write three questions you would ask a specialist on {s}{m}.",
    ),
    (
        "Outline a beginner's study plan for learning about {s}{m}.",
        "Plan how a complete beginner could study {s} step by step{m}.",
    ),
    (
        "Write a persuasive paragraph arguing that schools should teach {s}{m}.",
        "Argue in one paragraph that {s} deserves a place in the school curriculum{m}.",
    ),
    (
        "Describe a day in the life of someone whose job revolves around {s}{m}.",
        "Tell me what an ordinary working day looks like for a person who works with {s}{m}.",
    ),
    (
        "Compare two different approaches to {s} and say which you prefer{m}.",
        "Contrast two ways of approaching {s} and explain your preference{m}.",
    ),
    (
        "Write a product description for a board game themed around {s}{m}.",
        "Draft the marketing copy for a tabletop game built on the theme of {s}{m}.",
    ),
    (
        "Tell a children's story that teaches a lesson about {s}{m}.",
        "Write a story for kids that carries a moral about {s}{m}.",
    ),
    (
        "Draft a tweet thread of five posts about {s}{m}.",
        "Write five connected social media posts discussing {s}{m}.",
    ),
    ("What ethical questions does {s} raise{m}?", "Which moral dilemmas come up around {s}{m}?"),
    (
        "Create a glossary of ten key terms related to {s}{m}.",
        "List and define ten important words someone studying {s} should know{m}.",
    ),
    (
        "Suggest a science-fair project involving {s}{m}.",
        "Propose an experiment about {s} that a student could present at a science fair{m}.",
    ),
    ("Write a haiku sequence inspired by {s}{m}.", "Compose several haiku that draw on {s}{m}."),
    (
        "Explain how {s} might change over the next twenty years{m}.",
        "Predict how {s} could evolve during the coming two decades{m}.",
    ),
    (
        "Give a balanced pros-and-cons list for investing public money in {s}{m}.",
        "List the advantages and disadvantages of spending taxpayer funds on {s}{m}.",
    ),
    (
        "Write a dialogue between two friends disagreeing about {s}{m}.",
        "Script a conversation in which two friends argue over {s}{m}.",
    ),
    (
        "Design a one-hour workshop that introduces adults to {s}{m}.",
        "Plan a sixty-minute session teaching grown-ups the basics of {s}{m}.",
    ),
    ("Write a limerick about {s}{m}.", "Compose a humorous five-line limerick on {s}{m}."),
    ("What careers are connected to {s}{m}?", "Which jobs and professions relate to {s}{m}?"),
    (
        "Draft an email inviting colleagues to a lunch talk on {s}{m}.",
        "Write a message asking coworkers to attend a lunchtime presentation about {s}{m}.",
    ),
    (
        "Explain the main scientific ideas behind {s}{m}.",
        "Describe the core science that underlies {s}{m}.",
    ),
    (
        "Write the opening paragraph of a mystery novel set in the world of {s}{m}.",
        "Begin a detective story whose setting revolves around {s}{m}.",
    ),
    (
        "Create a checklist for someone getting started with {s}{m}.",
        "Make a to-do list for a newcomer taking up {s}{m}.",
    ),
    (
        "Summarise the biggest debates among experts on {s}{m}.",
        "What do specialists in {s} disagree about most{m}?",
    ),
    ("Write a motivational speech about {s}{m}.", None),
    ("Propose three research questions about {s}{m}.", None),
    ("Write a recipe-style guide, with ingredients and steps, for understanding {s}{m}.", None),
    ("Imagine {s} did not exist. Describe how the world would be different{m}.", None),
    ("Write a fictional diary entry from a person obsessed with {s}{m}.", None),
    ("List the tools or resources someone needs to explore {s}{m}.", None),
    ("Write a short radio advert promoting a festival about {s}{m}.", None),
    ("Explain the economics of {s}{m}.", None),
    ("Describe the environmental impact of {s}{m}.", None),
    ("Create a mnemonic to remember key facts about {s}{m}.", None),
    ("Write a rap verse about {s}{m}.", None),
    ("How would you explain {s} using only an analogy to cooking{m}?", None),
    ("Write a news headline and lead paragraph about a breakthrough in {s}{m}.", None),
    ("Give advice to a city mayor who wants to support {s}{m}.", None),
    ("Draft a museum exhibit description for a display on {s}{m}.", None),
    ("What are three open problems in {s}{m}?", None),
    ("Write a job advert for a specialist in {s}{m}.", None),
    ("Describe {s} from the point of view of an alien visitor{m}.", None),
    ("Write a letter to a newspaper editor about {s}{m}.", None),
    ("Explain the difference between a myth and a fact about {s}{m}.", None),
    ("Plan a weekend trip centred on {s}{m}.", None),
    ("Write a sonnet about {s}{m}.", None),
    ("Give a step-by-step explanation of how experts measure progress in {s}{m}.", None),
    ("Write a short horror story involving {s}{m}.", None),
    ("Describe the role of women in the history of {s}{m}.", None),
    ("What would a beginner's first week of practising {s} look like{m}?", None),
    ("Create a debate motion about {s} and give one argument for each side{m}.", None),
    ("Write a product review of an imaginary gadget for {s}{m}.", None),
    ("Explain why {s} matters to ordinary people{m}.", None),
    ("Design a poster slogan campaign about {s}{m}.", None),
    ("Write a eulogy for an imaginary pioneer of {s}{m}.", None),
    ("Describe how artificial intelligence could help {s}{m}.", None),
    ("List five books or films that touch on {s} and say why{m}.", None),
    ("Write a grant proposal summary for a project on {s}{m}.", None),
    ("Explain the legal issues surrounding {s}{m}.", None),
    ("Compose a lullaby about {s}{m}.", None),
    ("Describe a memorable failure in the history of {s}{m}.", None),
    ("Give a two-minute elevator pitch for a startup in {s}{m}.", None),
    ("How is {s} taught differently around the world{m}?", None),
    ("Write a FAQ with five questions and answers about {s}{m}.", None),
]

SUBJECTS = """
urban beekeeping; sourdough baking; volcanic eruptions; medieval castles; quantum computing;
coral reef restoration; marathon training; jazz improvisation; origami; typography;
solar sails; deep-sea fishing; medieval manuscripts; electric bicycles; wildfire prevention;
cryptography; chess openings; bird migration; ancient Egyptian medicine; 3D printing;
permaculture; tidal energy; the Silk Road; glassblowing; sign language; black holes;
vertical farming; the printing press; circus acrobatics; cheese making; antibiotic resistance;
open-source software; desert ecosystems; stand-up comedy; the Roman aqueducts; lichen;
container shipping; ballet; wind turbines; the human microbiome; tea ceremonies; bonsai;
public libraries; competitive swimming; dark matter; language extinction; railway signalling;
meteorology; perfume making; the Apollo program; mangrove forests; street art; kombucha;
autonomous vehicles; fountain pens; the Great Barrier Reef; falconry; mushroom foraging;
cloud computing; Viking navigation; stained glass; sleep science; lighthouse keeping;
the Olympic Games; Arctic exploration; podcasting; recycling plastics; chocolate making;
the immune system; board game design; carbon capture; Renaissance painting; knitting;
satellite imaging; hydroponics; the Byzantine Empire; mountain rescue; octopus intelligence;
video game speedrunning; composting; calligraphy; gravitational waves; the Industrial Revolution;
beekeeping regulations; smart homes; tropical cyclones; puppet theatre; the history of zero;
supply chains; sea turtles; the violin; fermentation; urban planning; meditation;
the Mongol Empire; nuclear fusion; wine tasting; microplastics; folk dancing;
electric grids; tattoo art; the Dead Sea Scrolls; cave diving; desalination; poetry slams;
photosynthesis; rock climbing; the Hubble telescope; fashion recycling; honeybee decline;
cartography; the Cold War space race; ant colonies; pottery; high-speed trains;
genealogy research; wolves in Yellowstone; bridge engineering; aromatherapy; tornado chasing;
public speaking; paper making; the Harlem Renaissance; snow leopards; robotics competitions;
ocean acidification; barbershop quartets; ancient Greek theatre; data privacy; kite surfing;
the Amazon rainforest; sundials; food banks; cricket; the printing of banknotes;
mosaic art; Antarctic research stations; blockchain voting; horse whispering; lithium mining;
the French Revolution; bird watching; quilting; earthquakes; the Panama Canal; woodturning;
radio astronomy; minimalism; the Inca road system; skateboarding; forensic science;
urban foxes; coffee roasting; the Black Death; kayaking; prosthetic limbs; shadow puppetry;
the periodic table; esports; glaciers; sushi; the Berlin Wall; beavers; model railways;
air traffic control; bamboo construction; volunteer firefighting; Morse code; cloud seeding;
the Ottoman Empire; gene editing; rooftop gardens; handwriting analysis; bioluminescence;
the Silk industry; surfing; the Library of Alexandria; drones in agriculture; tea plantations;
standing stones; circus clowns; migration of monarch butterflies; electric guitars;
the Maya calendar; nanotechnology; wetland conservation; cryptocurrency mining; juggling;
early aviation; seed banks; the history of vaccines; flamenco; crossword puzzles;
Antarctic penguins; the telegraph; ice hockey; sustainable fashion; moon landings;
fire ants; medieval guilds; the Suez Canal; ecotourism; lacrosse; paper airplanes;
solar power in deserts; the Aztec capital; hot air balloons; community radio; whale song;
clockmaking; the gig economy; truffle hunting; northern lights; rice cultivation;
the Trojan War; swimming pools; electric cars; the history of chocolate; weaving;
underwater archaeology; bike-sharing schemes; sea shanties; asteroid mining; the Eiffel Tower;
wildlife corridors; plate tectonics; jigsaw puzzles; the Gutenberg Bible; marine biology;
stock markets; geocaching; the Great Wall of China; lunar gardens; sled dogs; fungi networks;
the samurai; anime; bridge tolls; climate refugees; heirloom tomatoes; the Titanic;
lighthouses of Scotland; saltwater aquariums; the Hanseatic League; origami engineering;
birdsong recording; public transport fares; cathedral acoustics; mountain goats; typewriters;
the Sahara caravans; soap making; tide pools; marching bands; hedgehog rescue; dry-stone walls
"""

MODIFIERS = [
    "",
    "",
    "",
    "",
    " for a school newsletter",
    " in under 150 words",
    " using a friendly tone",
    " for a general audience",
    " with one concrete example",
    " in the style of a pirate",
    " for retired engineers",
    " without using technical jargon",
    " in exactly three bullet points",
    " for a podcast audience",
    " as a numbered list",
    " for a ten-year-old",
    " and include a surprising statistic",
    " in a formal register",
    " with a call to action",
    " for readers in rural areas",
    " in the voice of a sports commentator",
]


def subjects() -> list[str]:
    return [s.strip() for s in SUBJECTS.replace("\n", " ").split(";") if s.strip()]


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def near_edit(text: str, rng: random.Random) -> str:
    """A light edit of the kind repeated generations make: politeness, typo, reorder, trim."""
    toks = text.split()
    kind = rng.choice(["please", "typo", "swap", "drop", "suffix"])
    if kind == "please":
        return "Please " + text[0].lower() + text[1:]
    if kind == "typo":
        i = rng.randrange(len(toks))
        toks[i] = _typo(toks[i], rng)
    elif kind == "swap" and len(toks) > 3:
        i = rng.randrange(1, len(toks) - 1)
        toks[i], toks[i + 1] = toks[i + 1], toks[i]
    elif kind == "drop" and len(toks) > 5:
        del toks[rng.randrange(1, len(toks) - 1)]
    else:
        return text.rstrip(".?!") + ". Thanks!"
    return " ".join(toks)


def exact_edit(text: str, rng: random.Random) -> str:
    """Same text after normalisation: case, spacing and end punctuation only."""
    t = rng.choice([text.lower(), text.upper(), "  " + text, text.replace(" ", "  ")])
    return t.rstrip(".?!") + rng.choice(["", ".", "!!", " ?"])


def build_dataset(n: int, seed: int, bench_items: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Instructions in order, with what each one is: base, or a plant and its source."""
    rng = random.Random(seed)
    n_exact, n_near, n_sem, n_bench = (round(n * f) for f in (0.05, 0.05, 0.04, 0.01))
    n_base = n - n_exact - n_near - n_sem - n_bench
    combos = [(t, s) for t in range(len(TEMPLATES)) for s in subjects()]
    if n_base > len(combos):
        raise SystemExit(f"only {len(combos)} distinct base combinations for {n_base}")
    rng.shuffle(combos)
    base = [(t, s, rng.choice(MODIFIERS)) for t, s in combos[:n_base]]
    # (sort key, text, label, source key or None, extra)
    rows: list[tuple[float, str, str, float | None, Any]] = []
    for t, s, m in base:
        rows.append((rng.random(), TEMPLATES[t][0].format(s=s, m=m), "base", None, (t, s, m)))
    base_rows = list(rows)
    paraphrasable = [r for r in base_rows if TEMPLATES[r[4][0]][1] is not None]

    def later(key: float) -> float:
        return key + (1 - key) * rng.uniform(0.01, 1.0)

    for _ in range(n_exact):
        src = rng.choice(base_rows)
        rows.append((later(src[0]), exact_edit(src[1], rng), "exact", src[0], None))
    for _ in range(n_near):
        src = rng.choice(base_rows)
        rows.append((later(src[0]), near_edit(src[1], rng), "near", src[0], None))
    for _ in range(n_sem):
        src = rng.choice(paraphrasable)
        t, s, m = src[4]
        alt = TEMPLATES[t][1]
        assert alt is not None
        rows.append((later(src[0]), alt.format(s=s, m=m), "semantic", src[0], None))
    for item in rng.sample(bench_items, n_bench):
        bench, item_id, prompt = item
        wrapped = rng.random() < 0.5
        text = "Please answer the following. " + prompt if wrapped else prompt
        rows.append((rng.random(), text, "benchmark", None, (bench, item_id, wrapped)))
    rows.sort(key=lambda r: r[0])
    pos = {r[0]: i for i, r in enumerate(rows)}
    return {
        "texts": [r[1] for r in rows],
        "labels": [r[2] for r in rows],
        "source": [pos[r[3]] if r[3] is not None else None for r in rows],
        "bench": [r[4] if r[2] == "benchmark" else None for r in rows],
    }


# --------------------------------------------------------------------------- measuring


class PeakRSS:
    """Samples this process's resident memory in a thread; peak per measured phase."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def reset(self) -> None:
        self._peak = self.rss()

    def peak(self) -> int:
        return max(self._peak, self.rss())

    def close(self) -> None:
        self._stop.set()


RESULTS: list[dict[str, Any]] = []


@contextmanager
def phase(name: str, mem: PeakRSS) -> Iterator[dict[str, Any]]:
    start_rss = mem.rss()
    mem.reset()
    t0 = time.perf_counter()
    info: dict[str, Any] = {"phase": name}
    yield info
    info["seconds"] = time.perf_counter() - t0
    info["peak_rss_mb"] = mem.peak() / 2**20
    info["delta_rss_mb"] = (mem.peak() - start_rss) / 2**20
    RESULTS.append(info)
    print(f"  {name}: {info['seconds']:.1f} s, peak RSS {info['peak_rss_mb']:.0f} MiB", flush=True)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-cold", action="store_true", help="no cold-cache decontam run")
    args = parser.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    mem = PeakRSS()
    import numpy as np
    from prefsynth.curation import decontam
    from prefsynth.curation.dedup import find_duplicates
    from prefsynth.curation.embeddings import embed

    from prefsynth.config import BENCHMARKS, DecontamConfig, DedupConfig

    bench_items = [
        (b, it.item_id, it.prompt) for b in BENCHMARKS for it in decontam.load_benchmark(b)
    ]
    data = build_dataset(args.n, args.seed, bench_items)
    texts, labels, source = data["texts"], data["labels"], data["source"]
    print(f"{len(texts)} instructions: {dict(Counter(labels))}", flush=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu", flush=True)

    with phase("load model + import", mem):
        embed(["warm up"])
    with phase(f"embed {len(texts)}", mem):
        emb = embed(texts)

    dedup_cfg = DedupConfig()
    with phase("dedup (defaults)", mem):
        dups = find_duplicates(texts, dedup_cfg, embeddings=emb)

    decon_cfg = DecontamConfig()
    old_cache = os.environ.get("PREFSYNTH_CACHE_DIR")
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["PREFSYNTH_CACHE_DIR"] = tmp
            with phase("decontam cold (index + encode benchmarks)", mem):
                index = decontam.BenchmarkIndex(decon_cfg.benchmarks, decon_cfg.ngram)
                cont = decontam.find_contamination(texts, decon_cfg, emb, index=index)
        if old_cache is None:
            del os.environ["PREFSYNTH_CACHE_DIR"]
        else:
            os.environ["PREFSYNTH_CACHE_DIR"] = old_cache
    # Warm: the default cache (filled here on the first run of this script).
    decontam.BenchmarkIndex(decon_cfg.benchmarks, decon_cfg.ngram).embeddings()
    with phase("decontam warm (index + cached benchmarks)", mem):
        index = decontam.BenchmarkIndex(decon_cfg.benchmarks, decon_cfg.ngram)
        cont = decontam.find_contamination(texts, decon_cfg, emb, index=index)
    with phase("decontam, index already built", mem):
        cont = decontam.find_contamination(texts, decon_cfg, emb, index=index)
    mem.close()

    report: dict[str, Any] = {"n": len(texts), "phases": RESULTS}
    report["dedup"] = dedup_quality(dups, labels, source)
    report["decontam"] = decontam_quality(cont, labels, data["bench"], index)
    print_dedup(report["dedup"], "dedup at defaults")

    # Threshold sweeps (embeddings reused; each run is a few seconds).
    sweep = []
    for near, sem in [(90, 0.92), (95, 0.92), (95, 0.90), (95, 0.88), (95, 0.85), (90, 0.85)]:
        cfg = DedupConfig(near_threshold=near, semantic_threshold=sem)
        d, secs = timed(lambda cfg=cfg: find_duplicates(texts, cfg, embeddings=emb))
        q = dedup_quality(d, labels, source)
        sweep.append({"near": near, "semantic": sem, "seconds": secs, **q})
    report["dedup_sweep"] = sweep
    print("\ndedup sweep (recall by planted kind; unplanted base items removed)")
    print("near  sem   exact  near   sem    base_removed  seconds")
    for s in sweep:
        r = s["recall"]
        print(
            f"{s['near']:<5} {s['semantic']:<5} {r['exact']:.3f}  {r['near']:.3f}  "
            f"{r['semantic']:.3f}  {s['base_removed']:<13} {s['seconds']:.1f}"
        )

    # Decontam sweep from the raw scores.
    ng_score, _ = index.ngram_match(texts)
    em_score, em_item = index.nearest(emb)
    is_bench = np.array([lab == "benchmark" for lab in labels])
    dec_sweep = []
    for thr in (0.75, 0.80, 0.82, 0.85, 0.90):
        hit = (ng_score >= 0.5) | (em_score >= thr)
        by_bench = Counter(
            index.items[j].benchmark
            for j, h, b in zip(em_item, hit, is_bench, strict=True)
            if h and not b
        )
        dec_sweep.append(
            {
                "semantic": thr,
                "recall": float(hit[is_bench].mean()),
                "unplanted_flagged": int(hit[~is_bench].sum()),
                "unplanted_by_benchmark": dict(by_bench),
            }
        )
    report["decontam_sweep"] = dec_sweep
    q = np.quantile(em_score[~is_bench], [0.5, 0.9, 0.99, 0.999, 1.0])
    report["unplanted_max_cos_quantiles"] = dict(
        zip(["p50", "p90", "p99", "p99.9", "max"], q.round(3).tolist(), strict=True)
    )
    print(f"\ndecontam at defaults: {report['decontam']}")
    print("decontam sweep (ngram 0.5 fixed):")
    for s in dec_sweep:
        print(
            f"  cos>={s['semantic']}: recall {s['recall']:.3f}, unplanted flagged "
            f"{s['unplanted_flagged']} {s['unplanted_by_benchmark']}"
        )
    print(f"unplanted max-cosine quantiles: {report['unplanted_max_cos_quantiles']}")

    print("\n| phase | wall s | peak RSS MiB | RSS growth MiB |\n|---|---|---|---|")
    for r in RESULTS:
        print(
            f"| {r['phase']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['delta_rss_mb']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def dedup_quality(dups: list[Any], labels: list[str], source: list[int | None]) -> dict[str, Any]:
    removed = {d.index: d for d in dups}
    kinds = ("exact", "near", "semantic")
    recall = {}
    right_target = 0
    for k in kinds:
        idx = [i for i, lab in enumerate(labels) if lab == k]
        found = [i for i in idx if i in removed]
        recall[k] = len(found) / max(len(idx), 1)
        # The planted copy points at its source, or at the kept item its source was removed for.
        for i in found:
            src = source[i]
            assert src is not None
            target = removed[src].duplicate_of if src in removed else src
            right_target += removed[i].duplicate_of == target
    planted_found = sum(1 for i in removed if labels[i] in kinds)
    base_removed = [d for d in dups if labels[d.index] == "base"]
    return {
        "recall": recall,
        "removed": len(dups),
        "removed_by_kind": dict(Counter(d.kind for d in dups)),
        "planted_found_with_right_target": f"{right_target}/{planted_found}",
        "base_removed": len(base_removed),
        "base_removed_by_kind": dict(Counter(d.kind for d in base_removed)),
        "benchmark_plants_removed": sum(1 for d in dups if labels[d.index] == "benchmark"),
    }


def print_dedup(q: dict[str, Any], title: str) -> None:
    print(f"\n{title}: {json.dumps(q)}")


def decontam_quality(
    cont: list[Any], labels: list[str], bench: list[Any], index: Any
) -> dict[str, Any]:
    from prefsynth.curation.dedup import normalize

    flagged = {c.index: c for c in cont}
    planted = [i for i, lab in enumerate(labels) if lab == "benchmark"]
    prompt_of = {(it.benchmark, it.item_id): normalize(it.prompt) for it in index.items}
    found = right = 0
    found_by = Counter()
    for i in planted:
        c = flagged.get(i)
        if c is None:
            continue
        found += 1
        found_by["wrapped" if bench[i][2] else "verbatim"] += 1
        # Right if it names the planted item, or one with the same prompt (AlpacaEval holds
        # all of Vicuna and PandaLM's instructions, and first-listed benchmarks win ties).
        right += prompt_of[(c.benchmark, c.item_id)] == prompt_of[(bench[i][0], bench[i][1])]
    wrong = [c for c in cont if labels[c.index] != "benchmark"]
    return {
        "planted": len(planted),
        "planted_wrapped": sum(1 for i in planted if bench[i][2]),
        "found": found,
        "found_by_plant": dict(found_by),
        "found_right_item": right,
        "recall": found / max(len(planted), 1),
        "unplanted_flagged": len(wrong),
        "unplanted_flagged_by": dict(Counter(f"{c.benchmark}/{c.method}" for c in wrong)),
        "by_method": dict(Counter(c.method for c in cont)),
    }


if __name__ == "__main__":
    main()
