"""The GPU check's report: the loss-curve figure and the markdown summary of gpu_check.json
(benchmarks/gpu_check.py writes both)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = [n for n, c in curves.items() if c.get("fp32")]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        for precision in ("fp32", "bf16"):
            ax.plot(range(1, len(curves[name][precision]) + 1), curves[name][precision], label=precision)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path.with_name(f".{path.name}.tmp.png"), dpi=100)
    plt.close(fig)
    os.replace(path.with_name(f".{path.name}.tmp.png"), path)


def recipe_rows(recipes: dict, needed: str, columns: int, cells) -> list[str]:
    """One table row per recipe: name, status, then `cells(result)`, or the error where the
    result lacks `needed` (the row padded to `columns`)."""
    rows = []
    for name, r in recipes.items():
        rest = cells(r) if needed in r else r.get("error", "")[:200] + " |" * (columns - 3)
        rows.append(f"| {name} | {r['status']} | {rest} |")
    return rows


def summary(report: dict) -> str:
    """The markdown summary of the report."""
    info = report["info"]
    lines = [f"# GPU check{' (DRY RUN: CPU only)' if info['dry_run'] else ''}", "",
             f"device: {info['device']}; torch {info['torch']}"
             f"{'; CUDA ' + str(info['cuda']) if info.get('cuda') else ''}; size {report['settings']['size']}; "
             f"{report['seconds']:.0f} s in all; **{'all parts ok' if report['ok'] else 'NOT all parts ok'}**", "",
             "| part | status | seconds | CPU seconds | budget |", "|---|---|---|---|---|"]
    for name, part in report["parts"].items():
        kept = " (kept from an earlier run)" if part.get("kept") else ""
        lines.append(f"| {name} | {part['status']}{kept} | {part['seconds']} | {part.get('cpu_s', '')} "
                     f"| {part['budget_s']} |")
    check = report["parts"].get("correctness", {})
    if check.get("recipes"):
        other = "second CPU run" if info["dry_run"] else "cuda"
        lines += ["", f"## Correctness: {other} vs CPU, fp32, 3 steps", "",
                  f"tolerances (relative): {json.dumps(check.get('tolerances'))}", "",
                  "| recipe | status | loss CPU | loss rel diff | grad norm rel diff | 3 losses rel diff "
                  "| update rel diff | outliers | max abs param diff | random ops drawn on the CPU | fixed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += recipe_rows(check["recipes"], "loss", 11, lambda r: (
            f"{r['loss'][0]:.6g} | {r['loss_rel']:.2e} | {r['grad_norm_rel']:.2e} | {r['losses_rel']:.2e} "
            f"| {r['update_rel']:.2e} | {r['outliers']:.2e} | {r['param_max_abs']:.2e} "
            f"| {', '.join(f'{k} {v}' for k, v in r['draws'].items())} | {' '.join(r['fixed'])}"))
    curves = report["parts"].get("bf16_curves", {})
    if curves.get("recipes"):
        lines += ["", f"## bf16 autocast vs fp32, {curves.get('steps')} steps on the "
                      f"{'CPU (dry run)' if info['dry_run'] else 'GPU'}", "",
                  "| recipe | status | fp32 first -> last | bf16 first -> last | max rel gap | rel gap, last fifth |",
                  "|---|---|---|---|---|---|"]
        lines += recipe_rows(curves["recipes"], "fp32", 6, lambda r: (
            f"{r['fp32'][0]:.4g} -> {r['fp32'][-1]:.4g} | {r['bf16'][0]:.4g} -> {r['bf16'][-1]:.4g} "
            f"| {r['max_rel_gap']:.2%} | {r['last_rel_gap']:.2%}"))
        if curves.get("plot"):
            lines += ["", f"![loss curves]({curves['plot']})"]
    for name in ("bench_train", "bench_embed", "bench_heareval"):
        part = report["parts"].get(name)
        if part:
            note = ""
            if name == "bench_heareval" and "--no-kit" in part["command"]:
                note = " (hear-eval-kit not installed here: audiorep's side alone)"
            lines += ["", f"## {name}{note}", "", f"`{' '.join(part['command'][1:])}`", "", "```",
                      (part.get("stdout") or "").strip() or "(no output)", "```"]
    for name, part in report["parts"].items():
        if part["status"] != "ok" and part.get("error"):
            lines += ["", f"## {name}: {part['status']} (end of logs/{name}.log)", "", "```", part["error"].strip(),
                      "```"]
    return "\n".join(lines) + "\n"
