"""What a fit, an evaluation or an active-learning report says in a few lines of text.

The command line prints these; a notebook can too (``print(summaries.evaluation(report))``).
Each takes the object the library call returned and, where it was written to a file, the
path, and returns the lines as one string.
"""

from __future__ import annotations

from typing import Any


def _num(v) -> str:
    return "nan" if v is None else f"{v:.4f}"


def _to(out) -> str:
    return f" -> {out}" if out else ""


def fit(fitted: Any, out=None) -> str:
    """The method, model, steps and training time of a :class:`~bayesmeta.fitted.Fitted`, and
    ``auto``'s choice with its reason where ``auto`` made one."""
    i = fitted.info
    lines = []
    if "auto" in i:
        lines.append(f"auto chose {i['model']} / {i['method']}: {i['auto']['reason']}")
    lines.append(f"fitted {i['method']} on {i['model']}: {i['steps']} steps in "
                 f"{i['train_seconds']:.1f}s{_to(out)}")  # fmt: skip
    return "\n".join(lines)


def evaluation(report: dict, out=None) -> str:
    """The scores of :func:`bayesmeta.scoring.evaluate_run`'s report, the baselines' NLL on a
    data run, and the recalibrated NLL and conformal coverage where the report has them."""
    keys = [k for k in ("nll", "mse", "accuracy", "calibration_error", "ece") if k in report]
    lines = [" ".join(f"{k}={report[k]:.4f}" for k in keys) + _to(out)]
    if report.get("baselines"):
        lines.append("baselines: " + " ".join(f"{k} nll={v['nll']:.4f}"
                                              for k, v in report["baselines"].items()))  # fmt: skip
    if "conformal" in report:
        cov = report["conformal"]["coverage"]
        scaled = report.get("recalibrated", {}).get("nll")
        head = "" if scaled is None else f"recalibrated nll={scaled:.4f}; "
        cells = " ".join(f"cov{float(k) * 100:g}={v:.2f}" for k, v in cov.items())
        lines.append(f"{head}conformal {cells}")
    return "\n".join(lines)


def active(report: dict, out=None) -> str:
    """First and last point of each learning curve of :func:`bayesmeta.scoring.active_run`, or
    the ranked candidate rows of :func:`bayesmeta.scoring.active_suggest`."""
    if "suggestions" in report:
        return suggestions(report, out)
    curves = report["curves"] if "curves" in report else {report["acquisition"]: report}
    lines = []
    for name, c in curves.items():
        m = "accuracy" if "accuracy" in c else "mse"
        lines.append(f"{name}: {m} {_num(c[m][0])} -> {_num(c[m][-1])}, nll "
                     f"{_num(c['nll'][0])} -> {_num(c['nll'][-1])} after "
                     f"{report['queries']} queries")  # fmt: skip
    return "\n".join([*lines, f"-> {out}"] if out else lines)


def suggestions(report: dict, out=None) -> str:
    """The candidate rows to label next, best first, as a table with their file lines."""
    cols = report["x_columns"]
    n, p = len(report["suggestions"]), report["candidates"]
    lines = [
        f"group {report['group_id']!r}: {n} of {p} candidate rows by {report['acquisition']} "
        f"(support K={report['support_size']}), best first"
        + (f" per unit of {report['cost_column']!r}:" if report.get("cost_column") else ":")
    ]
    costed = report.get("cost_column") is not None
    rows = [["rank", "line", *cols, "score", *(["cost"] if costed else [])]]
    for s in report["suggestions"]:
        rows.append([str(s["rank"]), str(s["line"]), *(f"{s['x'][c]:.6g}" for c in cols),
                     _num(s["score"]), *([f"{s['cost']:.6g}"] if costed else [])])  # fmt: skip
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(f"fill in {report['y_column']!r} on these lines of {report['data']} and run "
                 f"again{_to(out)}")  # fmt: skip
    return "\n".join(lines)


__all__ = ["active", "evaluation", "fit", "suggestions"]
