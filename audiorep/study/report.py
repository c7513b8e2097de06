"""The study's report: OUT/table.md (scores only: the same after any interruption),
OUT/study.md (the table, learning curves, cost, comparisons) and OUT/plots/*.png.

A run of several seeds is the mean over its seeds: per task the mean score, and for its 95%
interval the mean of the seeds' bootstrap replicates (the evaluator resamples the same test
clips for every model). Normalized score = score / the best score of every model evaluated
on the task (curve points and references included; an error rate: best / score), averaged
over the tasks; its interval comes from the same replicates (evaluate/scores.py).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from audiorep.evaluate import bootstrap, scores
from audiorep.files import write_text

LOGMEL = "log-mel"


def _mean(values):
    return float(np.mean(values)) if len(values) else math.nan


def combine(results: dict, members: list[str]) -> dict[str, dict]:
    """{task: {score, bootstrap}} of the mean over `members` (models of results.json) on the
    tasks all of them have."""
    per = [results["results"][m] for m in members]
    out = {}
    for task in sorted(set.intersection(*(set(p) for p in per))):
        boots = [p[task].get("bootstrap") for p in per]
        shared = all(boots) and len({b["n"] for b in boots}) == 1
        reps = np.mean([b["replicates"] for b in boots], axis=0) if shared else None  # [n]
        out[task] = {"score": _mean([p[task]["score"] for p in per]), "maximize": per[0][task]["maximize"],
                     "bootstrap": {"replicates": reps, "n": len(reps)} if reps is not None else None}
    return out


class Scores:
    """Normalized scores of groups of models (a run's seeds at one step, or one reference)."""

    def __init__(self, results: dict, groups: dict[str, list[str]]):
        self.results, self.groups = results, groups
        table = scores.primary_table(results["results"])
        self.maximize = {t: next(r[t]["maximize"] for r in results["results"].values() if t in r) for t in table}
        self.best = scores.best_scores(table, self.maximize)
        self.combined = {g: combine(results, ms) for g, ms in groups.items()}
        self.tasks = sorted(self.best)

    def relative(self, score: float, task: str) -> float:
        return scores.normalize({task: {"x": score}}, self.maximize, {task: {"best": self.best[task]}})[task]["x"]

    def mean(self, group: str) -> float:
        return _mean([self.relative(r["score"], t) for t, r in self.combined[group].items()])

    def interval(self, group: str) -> list[float] | None:
        per_task = self.combined[group]
        normalized = {t: {group: self.relative(r["score"], t)} for t, r in per_task.items()}
        reps = scores.overall_replicates({group: per_task}, normalized, self.best, self.maximize)
        return bootstrap.interval(reps[group]) if group in reps else None

    def seed_se(self, group: str) -> float:
        """Standard error over the group's members of their mean normalized score (NaN for one)."""
        members = self.groups[group]
        if len(members) < 2:
            return math.nan
        values = [_mean([self.relative(r["score"], t) for t, r in combine(self.results, [m]).items()]) for m in members]
        return statistics.stdev(values) / math.sqrt(len(values))

    def task_cell(self, group: str, task: str) -> str:
        r = self.combined[group].get(task)
        if r is None:
            return "–"
        reps = (r["bootstrap"] or {}).get("replicates")
        low_high = bootstrap.interval(reps) if reps is not None else None
        return f"{r['score']:.3f}" + (f" [{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else "")


def _bracket(interval) -> str:
    return f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval and not any(map(math.isnan, interval)) else ""


def score_table(s: Scores, runs: list[dict], references: list[str]) -> list[str]:
    """Markdown: per run its mean normalized score with interval (and s.e. over seeds), then the
    references; then per task the primary scores."""
    lines = ["| run | recipe | seeds | mean normalized score [95% interval] | s.e. over seeds | paper |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        se = s.seed_se(r["group"])
        lines.append(f"| {r['name']} | {r['recipe']} | {len(s.groups[r['group']])} | "
                     f"{s.mean(r['group']):.3f}{_bracket(s.interval(r['group']))} | "
                     f"{'–' if math.isnan(se) else f'{se:.3f}'} | {r['paper'] or '–'} |")
    for ref in references:
        lines.append(f"| {ref} | reference | 1 | {s.mean(ref):.3f}{_bracket(s.interval(ref))} | – | – |")
    groups = [r["group"] for r in runs] + references
    names = [r["name"] for r in runs] + references
    lines += ["", "Primary test score per task (mean over seeds) [95% bootstrap interval over test clips]:", "",
              "| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {t} | " + " | ".join(s.task_cell(g, t) for g in groups) + " |" for t in s.tasks]
    return lines


def plot_curves(path: Path, s: Scores, curves: dict[str, list[tuple[float, str]]], inits: dict[str, str],
                xlabel: str) -> None:
    """One line per run (mean normalized score vs budget, bars: 95% intervals); each run's
    initialization dotted in its colour, log-mel dashed black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for i, (name, points) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        xs = [x for x, _ in points]
        ys = np.array([s.mean(g) for _, g in points])
        bounds = [s.interval(g) or [math.nan] * 2 for _, g in points]
        errs = np.nan_to_num(np.array([[y - b[0], b[1] - y] for y, b in zip(ys, bounds)]).T.clip(min=0))  # [2, P]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=colour, label=name)
        if name in inits:
            ax.axhline(s.mean(inits[name]), color=colour, ls=":", lw=1)
    ax.axhline(s.mean(LOGMEL), color="black", ls="--", lw=1, label="log-mel baseline")
    ax.plot([], [], color="gray", ls=":", label="each run's initialization")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean normalized score")
    ax.set_title("learning curves (bars: 95% bootstrap intervals over test clips)")
    ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scores(path: Path, s: Scores, groups: dict[str, str], references: list[str]) -> None:
    """Horizontal bars: mean normalized score of every run (blue) and reference (gray) with its interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    ys = np.array([s.mean(groups[n]) for n in names])
    bounds = [s.interval(groups[n]) or [math.nan] * 2 for n in names]
    errs = np.nan_to_num(np.array([[y - b[0], b[1] - y] for y, b in zip(ys, bounds)]).T.clip(min=0))  # [2, M]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2), layout="constrained")
    colours = ["tab:gray" if n in references else "tab:blue" for n in names]
    ax.barh(names[::-1], ys[::-1], xerr=errs[:, ::-1], capsize=3, color=colours[::-1])
    ax.set_xlabel("mean normalized score (bars: 95% bootstrap interval)")
    ax.set_xlim(0, max([1.05] + [1.02 * b[1] for b in bounds if not math.isnan(b[1])]))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: Path, text_above: list[str], table: list[str], text_below: list[str]) -> str:
    """OUT/table.md (the scores) and OUT/study.md (everything); -> study.md's text."""
    write_text(out / "table.md", "\n".join(table) + "\n")
    text = "\n".join([*text_above, *table, *text_below]) + "\n"
    write_text(out / "study.md", text)
    return text
