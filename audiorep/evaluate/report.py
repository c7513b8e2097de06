"""The run's outputs: results.json (machine-readable) and report.md with plots.

Plots (matplotlib, PNG under plots/): per-task primary scores as grouped bars, box plots
of normalized scores per category (PaSST paper Figure 8 style), and timing per model
(embedding and probe seconds).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from audiorep.files import write_json, write_text

from . import scores as sc


def _fmt(v: float, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _plots(out: Path, table: dict, normalized: dict, cats: dict, timing: dict, models: list[str]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    files = {}
    tasks = sorted(table)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) * max(1, len(models)) / 2), 4), layout="constrained")
    for i, m in enumerate(models):
        vals = [table[t].get(m, np.nan) for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, vals, width, label=m)
    ax.set_xticks(np.arange(len(tasks)) + width * (len(models) - 1) / 2, tasks, rotation=30, ha="right")
    ax.set_ylabel("primary test score")
    ax.legend(fontsize=8)
    fig.savefig(plots / "tasks.png", dpi=120)
    plt.close(fig)
    files["tasks"] = "plots/tasks.png"

    grouped = sc.by_category(normalized, cats)
    present = [c for c in sc.CATEGORIES if c in grouped]
    if present:
        label = 0.07 * max(len(m) for m in models)  # inches that rotated model names need
        fig, axes = plt.subplots(1, len(present), figsize=(max(3.5, 0.6 * len(models) + label) * len(present), 4 + label),
                                 squeeze=False, layout="constrained")
        for ax, c in zip(axes[0], present):
            ms = [m for m in models if m in grouped[c]]
            ax.boxplot([grouped[c][m] for m in ms], showmeans=True)
            ax.set_xticks(range(1, len(ms) + 1), ms, rotation=30, ha="right")
            ax.set_title(c)
            ax.set_ylim(0, 1.05)
        axes[0][0].set_ylabel("score / best score on the task")
        fig.savefig(plots / "categories.png", dpi=120)
        plt.close(fig)
        files["categories"] = "plots/categories.png"

    fig, ax = plt.subplots(figsize=(6 + 0.09 * max(len(m) for m in models), 0.6 * len(models) + 1.5), layout="constrained")
    emb = [timing[m]["embed_seconds"] for m in models]
    prb = [timing[m]["probe_seconds"] for m in models]
    ax.barh(models, emb, label="embeddings")
    ax.barh(models, prb, left=emb, label="probes")
    ax.set_xlabel("seconds, as measured when computed")
    ax.legend(fontsize=8)
    fig.savefig(plots / "timing.png", dpi=120)
    plt.close(fig)
    files["timing"] = "plots/timing.png"
    return files


def write_report(out: Path, results: dict[str, dict[str, dict]], metadata: dict[str, dict], timing: dict,
                 config: dict, reference: dict | None = None) -> dict:
    """Write results.json, report.md and plots; -> the results document."""
    models = list(results)
    table = sc.primary_table(results)
    maximize = {t: next(r[t]["maximize"] for r in results.values() if t in r) for t in table}
    cats = {t: sc.category(t, metadata.get(t)) for t in table}
    normalized = sc.normalize(table, maximize)
    normalized_ref = sc.normalize(table, maximize, reference) if reference else None
    grouped = sc.by_category(normalized_ref or normalized, cats)
    category_means = {c: {m: float(np.mean(v)) for m, v in per.items()} for c, per in grouped.items()}
    doc = {"config": config, "models": models, "categories": cats, "primary": table,
           "normalized": normalized, "normalized_to_reference": normalized_ref,
           "category_means": category_means, "timing": timing, "results": results}
    write_json(out / "results.json", doc)
    plots = _plots(out, table, normalized_ref or normalized, cats, timing, models)

    tasks = sorted(table)
    lines = ["# audiorep evaluate report", "",
             f"Mode `{config['mode']}`, grid points {config['grid_points']}, seeds {config['seeds']}, "
             f"max epochs {config['max_epochs']}. Scores are test means over folds/seeds (± sample std).", "",
             "## Primary scores", "", "| task | metric | category | " + " | ".join(models) + " |",
             "|---|---|---|" + "---|" * len(models)]
    for t in tasks:
        any_r = next(r[t] for r in results.values() if t in r)
        cells = [f"{_fmt(results[m][t]['score'])} ± {_fmt(results[m][t]['score_std'])}" if t in results[m] else "–"
                 for m in models]
        lines.append(f"| {t} | {any_r['primary']} | {cats[t]} | " + " | ".join(cells) + " |")
    basis = "the best score of the reference table" if reference else "the best model of this run"
    lines += ["", f"## Normalized scores (score / {basis})", "",
              "| category | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for c in sc.CATEGORIES:
        if c in category_means:
            lines.append(f"| {c} | " + " | ".join(_fmt(category_means[c].get(m, math.nan)) for m in models) + " |")
    lines += ["", f"![categories]({plots['categories']})" if "categories" in plots else "",
              f"![tasks]({plots['tasks']})", "", "## All metrics", ""]
    for t in tasks:
        lines.append(f"### {t}")
        lines.append("")
        for m in models:
            if t in results[m]:
                s = results[m][t]["scores"]
                lines.append(f"- **{m}**: " + ", ".join(f"{k} {_fmt(v['mean'])}" for k, v in s.items()))
        lines.append("")
    lines += ["## Timing", "", "| model | embeddings s | probes s |", "|---|---|---|"]
    lines += [f"| {m} | {timing[m]['embed_seconds']:.1f} | {timing[m]['probe_seconds']:.1f} |" for m in models]
    lines += ["", f"![timing]({plots['timing']})", ""]
    write_text(out / "report.md", "\n".join(lines))
    return doc
