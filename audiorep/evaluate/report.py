"""The run's outputs: results.json (machine-readable) and report.md with plots.

results.json holds the run's config, the tasks (category, primary metric, warnings), the
tasks that failed and why, primary scores, normalized scores, the mean normalized score of
each model overall and per category (with n = the number of tasks), timing and the full
per-task results. report.md shows the same as tables a paper can take: a spread (± sample
std) only where a score is the mean of more than one run (folds x seeds), with n; the 95%
bootstrap interval over test clips of each primary score and of each mean normalized score
(bootstrap.py), the best model of each task in bold and, in italics, every model whose
interval reaches the best score (the EnCodecMAE paper's Table 1 marking); paired bootstrap
comparisons of the pairs asked for (`compare`); each metric once; and, when a reference
table is given, columns of its published scores for the models named by `reference_models`. Plots (matplotlib, PNG under plots/): per-task primary scores,
box plots of normalized scores per category and over all tasks, and timing per model.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from audiorep.files import write_json, write_text

from . import bootstrap as bs
from . import scores as sc

ALL = "all tasks"


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _with_spread(mean: float, std: float | None, n: int) -> str:
    """`mean`, or `mean ± std (n=N)` when it is the mean of N > 1 runs."""
    return _fmt(mean) if n <= 1 or std is None else f"{_fmt(mean)} ± {_fmt(std)} (n={n})"


def _bracket(interval: list[float] | None) -> str:
    return "" if not interval or any(math.isnan(v) for v in interval) else f" [{interval[0]:.3f}, {interval[1]:.3f}]"


def _cell(result: dict, scores: dict[str, float], maximize: bool) -> str:
    """A primary score with its spread and interval; bold if it is the task's best, italic if its
    interval reaches the best."""
    best = max(scores.values()) if maximize else min(scores.values())
    text = _with_spread(result["score"], result["score_std"], result.get("n", 1))
    interval = (result.get("bootstrap") or {}).get("interval")
    text += _bracket(interval)
    if result["score"] == best:
        return f"**{text}**"
    if interval and (interval[1] >= best if maximize else interval[0] <= best):
        return f"*{text}*"
    return text


def _compare(a: str, b: str, results: dict, overall_reps: dict, maximize: dict[str, bool]) -> dict:
    """Paired bootstrap of model a against b on every task both have replicates for, and overall."""
    tasks = {}
    for t in sorted(set(results[a]) & set(results[b])):
        ra, rb = results[a][t].get("bootstrap"), results[b][t].get("bootstrap")
        tasks[t] = bs.paired(ra["replicates"], rb["replicates"], maximize[t]) if ra and rb else None
    overall = bs.paired(overall_reps[a], overall_reps[b]) if a in overall_reps and b in overall_reps else None
    return {"a": a, "b": b, "tasks": tasks, "overall": overall}


def _means(grouped: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, dict]]:
    return {g: {m: {"mean": float(np.mean(v)), "n": len(v)} for m, v in per.items()} for g, per in grouped.items()}


def _plots(out: Path, table: dict, grouped: dict, timing: dict, models: list[str],
           intervals: dict[str, dict[str, list[float]]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    files = {}
    tasks = sorted(table)
    if tasks:
        width = 0.8 / max(1, len(models))
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) * max(1, len(models)) / 2), 4), layout="constrained")
        for i, m in enumerate(models):
            vals = np.array([table[t].get(m, np.nan) for t in tasks])
            low, high = (np.array([intervals.get(m, {}).get(t, [np.nan, np.nan])[j] for t in tasks]) for j in (0, 1))
            errs = np.nan_to_num(np.stack([vals - low, high - vals]).clip(min=0))  # [2, tasks]; no interval: none
            ax.bar(np.arange(len(tasks)) + i * width, vals, width, label=m, yerr=errs, capsize=2)
        ax.set_xticks(np.arange(len(tasks)) + width * (len(models) - 1) / 2, tasks, rotation=30, ha="right")
        ax.set_ylabel("test score (95% interval)")
        ax.legend(fontsize=8)
        fig.savefig(plots / "tasks.png", dpi=120)
        plt.close(fig)
        files["tasks"] = "plots/tasks.png"

    present = [c for c in (*sc.CATEGORIES, ALL) if c in grouped]
    if present:
        label = 0.07 * max(len(m) for m in models)  # inches that rotated model names need
        values = [v for c in present for vs in grouped[c].values() for v in vs]
        top = 1.05 * max([1.0] + values)  # above 1: better than the reference table's best
        size = (max(3.5, 0.6 * len(models) + label) * len(present), 4.6 + label)
        fig, axes = plt.subplots(1, len(present), figsize=size, squeeze=False, layout="constrained")
        for ax, c in zip(axes[0], present):
            ms = [m for m in models if m in grouped[c]]
            ax.boxplot([grouped[c][m] for m in ms], showmeans=True, medianprops={"color": "tab:orange"},
                       meanprops={"marker": "^", "markerfacecolor": "tab:green", "markeredgecolor": "tab:green"})
            ax.set_xticks(range(1, len(ms) + 1), ms, rotation=30, ha="right")
            n = max(len(grouped[c][m]) for m in ms)
            ax.set_title(f"{c} ({n} task{'s' if n != 1 else ''})")
            ax.set_ylim(0, top)
        axes[0][0].set_ylabel("score / best score on the task")
        legend = [Line2D([], [], color="tab:orange", label="median of the tasks"),
                  Line2D([], [], marker="^", linestyle="", color="tab:green", label="mean of the tasks"),
                  Line2D([], [], color="black", label="box: middle half of the tasks; whiskers: 1.5 x box")]
        fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8)
        fig.savefig(plots / "categories.png", dpi=120)
        plt.close(fig)
        files["categories"] = "plots/categories.png"

    size = (6 + 0.09 * max(len(m) for m in models), 0.6 * len(models) + 1.5)
    fig, ax = plt.subplots(figsize=size, layout="constrained")
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


def _reference_rows(reference: dict | None, metadata: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{task key: {model: score}} of the reference table, matched by folder name, then task_name."""
    if not reference:
        return {}
    out = {}
    for key, meta in metadata.items():
        row = reference.get(key) or reference.get(meta.get("task_name", key))
        if row:
            out[key] = row
    return out


def write_report(out: Path, results: dict[str, dict[str, dict]], metadata: dict[str, dict], timing: dict,
                 config: dict, reference: dict | None = None, categories: dict[str, str] | None = None,
                 failed: dict[str, str] | None = None, warnings: dict[str, list[str]] | None = None,
                 reference_models: list[str] = (), compare: list[tuple[str, str]] = ()) -> dict:
    """Write results.json, report.md and plots; -> the results document.

    `results` {model: {task key: result}}, `metadata` {task key: task_metadata}, `failed`
    {task key or "task key / model": why}, `warnings` {task key: [messages]}, `compare`
    pairs (A, B) of model labels for paired bootstrap comparisons.
    """
    failed, warnings = failed or {}, warnings or {}
    models = list(results)
    table = sc.primary_table(results)
    maximize = {t: next(r[t]["maximize"] for r in results.values() if t in r) for t in table}
    cats = {t: sc.category(t, metadata[t], categories) for t in metadata}
    ref_rows = _reference_rows(reference, metadata)
    normalized = sc.normalize(table, maximize)
    normalized_ref = sc.normalize(table, maximize, ref_rows) if reference else None
    basis = normalized_ref if reference else normalized
    grouped = sc.by_category(basis, cats)
    overall = sc.by_category(basis, {t: ALL for t in basis})
    category_means, overall_means = _means(grouped), _means(overall).get(ALL, {})
    intervals = {m: {t: r["bootstrap"]["interval"] for t, r in per.items() if r.get("bootstrap")}
                 for m, per in results.items()}
    overall_reps = sc.overall_replicates(results, basis, sc.best_scores(table, maximize, ref_rows if reference else None),
                                         maximize)
    for m, reps in overall_reps.items():
        if m in overall_means:
            overall_means[m]["interval"] = bs.interval(reps)
    comparisons = [_compare(a, b, results, overall_reps, maximize) for a, b in compare]
    tasks = sorted(table)
    doc = {"config": config, "models": models,
           "tasks": {t: {"task_name": metadata[t].get("task_name"), "category": cats[t],
                         "primary": metadata[t]["evaluation"][0], "warnings": warnings.get(t, [])} for t in metadata},
           "failed": failed, "categories": cats, "primary": table, "normalized": normalized,
           "normalized_to_reference": normalized_ref, "overall_means": overall_means,
           "category_means": category_means, "reference": {m: {t: ref_rows[t].get(m) for t in ref_rows}
                                                           for m in reference_models},
           "comparisons": comparisons, "timing": timing, "results": results}
    write_json(out / "results.json", doc)
    plots = _plots(out, table, {**grouped, **overall}, timing, models, intervals)

    ref_cols = list(reference_models)
    lines = ["# audiorep evaluate report", "",
             f"Mode `{config['mode']}`, grid points {config['grid_points']}, seeds {config['seeds']}, "
             f"max epochs {config['max_epochs'] or 'as the grid says (500 unless the task sets it)'}. "
             "A score is the test mean over folds and seeds; `± s (n=N)` is the sample standard deviation "
             "of N > 1 runs; `[low, high]` its 95% bootstrap interval over the test clips "
             f"({config.get('bootstrap', 0)} resamples, the same for every model). **Bold**: the best model "
             "of the task; *italics*: a model whose interval reaches the best score.", ""]
    if failed:
        lines += ["## Failed", "", f"{len(failed)} task(s) could not be evaluated; the others were.", "",
                  "| task | problem |", "|---|---|"]
        lines += [f"| {t} | {why.replace('|', '/')} |" for t, why in sorted(failed.items())]
        lines.append("")
    lines += ["## Primary scores", "",
              "| task | metric | category | " + " | ".join(models + [f"HEAR 2021: {m}" for m in ref_cols]) + " |",
              "|---|---|---|" + "---|" * (len(models) + len(ref_cols))]
    for t in tasks:
        cells = [_cell(results[m][t], table[t], maximize[t]) if t in results[m] else "–" for m in models]
        cells += [_fmt(ref_rows.get(t, {}).get(m)) for m in ref_cols]
        lines.append(f"| {t} | {metadata[t]['evaluation'][0]} | {cats[t]} | " + " | ".join(cells) + " |")
    best = "the best score of the reference table" if reference else "the best model of this run"
    lines += ["", f"## Normalized scores (score / {best}; an error rate: best / score)", "",
              "Mean over the tasks of each group; n = tasks.", "",
              "| group | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for name, means in [(ALL, overall_means)] + [(c, category_means[c]) for c in sc.CATEGORIES if c in category_means]:
        lines.append(f"| {name} | " + " | ".join(
            f"{_fmt(means[m]['mean'])}{_bracket(means[m].get('interval'))} (n={means[m]['n']})" if m in means else "–"
            for m in models) + " |")
    if comparisons:
        lines += ["", "## Paired comparisons (bootstrap over the same test clips)", "",
                  "A - B: mean difference of the primary score over resamples (normalized score for all tasks), "
                  "its 95% interval, and the share of resamples on which A is better.", "",
                  "| A | B | task | A - B | 95% interval | P(A better) |", "|---|---|---|---|---|---|"]
        for c in comparisons:
            for t, d in [(ALL, c["overall"])] + sorted(c["tasks"].items()):
                if d is not None:
                    mark = " *" if d["significant"] else ""
                    lines.append(f"| {c['a']} | {c['b']} | {t} | {d['difference']:+.3f}{mark} |"
                                 f"{_bracket(d['interval']).strip()} | {_fmt(d['p_better'], 2)} |")
        lines += ["", "`*`: the interval excludes 0."]
    if "categories" in plots:
        lines += ["", f"![categories]({plots['categories']})", "",
                  "Box plots: one normalized score per task; orange line = median, green triangle = mean, "
                  "box = middle half of the tasks, whiskers up to 1.5 box lengths, circles beyond."]
    if "tasks" in plots:
        lines += ["", f"![tasks]({plots['tasks']})"]
    lines += ["", "## All metrics", ""]
    for t in tasks:
        lines += [f"### {t}", ""]
        for m in models:
            if t in results[m]:
                s = results[m][t]["scores"]
                lines.append(f"- **{m}**: " + ", ".join(f"{k} {_with_spread(v['mean'], v['std'], v['n'])}"
                                                        for k, v in s.items()))
        lines.append("")
    noted = {t: w for t, w in warnings.items() if w}
    if noted:
        lines += ["## Task metadata warnings", ""]
        lines += [f"- {t}: {w}" for t, ws in sorted(noted.items()) for w in ws]
        lines.append("")
    lines += ["## Timing", "", "| model | embeddings s | probes s |", "|---|---|---|"]
    lines += [f"| {m} | {timing[m]['embed_seconds']:.1f} | {timing[m]['probe_seconds']:.1f} |" for m in models]
    lines += ["", f"![timing]({plots['timing']})", ""]
    write_text(out / "report.md", "\n".join(lines))
    return doc
