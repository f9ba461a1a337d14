"""A scored task set as an object: :class:`Report`.

A report is the dict of metrics :func:`~bayesmeta.evaluate.evaluate` computes (so it is JSON as
it stands, and ``report["nll"]`` works as before), with a readable ``repr`` and
:meth:`Report.to_dataframe`, one row per task with the method's NLL beside each baseline's and
their paired difference. Standard errors are over tasks; on grouped data a task is one group,
so they are over groups.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _pm(value: Any, se: Any) -> str:
    if value is None:
        return "-"
    if se is None or not math.isfinite(float(se)):
        return f"{float(value):.4g}"
    return f"{float(value):.4g} ± {float(se):.2g}"


class Report(dict):
    """Metrics of a posterior predictive on held-out tasks (a ``dict``; the fields are
    :func:`~bayesmeta.evaluate.evaluate`'s, and on a data run the ``baselines``).

    ``repr`` gives the headline: NLL ± standard error over tasks, MSE or accuracy, calibration
    and interval coverage, and each baseline's NLL with the paired difference
    ``NLL(method) − NLL(baseline)`` ± its standard error over the same tasks.
    """

    def summary(self) -> str:
        """The report in a few lines of text."""
        head = f"Report: {self.get('method', '?')}"
        if self.get("model"):
            head += f" on {self['model']}"
        if self.get("k") is not None:
            head += f", K = {self['k']}"
        lines = [
            head,
            f"  tasks {self.get('n_tasks')}, query points {self.get('n_points')}"
            + (" (in the data's own units)" if self.get("units") == "data" else ""),
            f"  NLL per point     {_pm(self.get('nll'), self.get('nll_se'))}",
        ]
        if "accuracy" in self:
            lines.append(f"  accuracy          {_pm(self['accuracy'], self.get('accuracy_se'))}")
            lines.append(f"  ECE               {_pm(self.get('ece'), self.get('ece_se'))}")
        if "mse" in self:
            lines.append(f"  MSE               {float(self['mse']):.4g}")
        if "coverage" in self:
            cov = self["coverage"]
            lines.append(
                "  coverage          "
                + ", ".join(f"{float(k):.0%}: {float(v):.3f}" for k, v in cov.items())
            )
        if "recalibrated" in self:
            rc = self["recalibrated"]
            lines.append(
                f"  recalibrated      NLL {float(rc['nll']):.4g} (variance scale "
                f"{float(rc['variance_scale']):.3g}); coverage "
                + ", ".join(
                    f"{float(k):.0%}: {float(v):.3f}"
                    for k, v in rc["coverage"].items()
                    if k in ("0.5", "0.9")
                )  # fmt: skip
            )
        if "conformal" in self:
            cf = self["conformal"]
            lines.append(
                f"  conformal ({cf['method']}) coverage "
                + ", ".join(f"{float(k):.0%}: {float(v):.3f}" for k, v in cf["coverage"].items())
            )
        for name, base in (self.get("baselines") or {}).items():
            if "nll" not in base:  # a baseline that could not be fitted says why
                lines.append(f"  vs {name:<14s} not fitted: {base.get('error', '?')}")
                continue
            diff = float(self["nll"]) - float(base["nll"])
            lines.append(
                f"  vs {name:<14s} NLL {_pm(base['nll'], base.get('nll_se'))}; "
                f"difference {diff:+.4f}"
                + (f" ± {base['diff_se']:.2g}" if "diff_se" in base else "")  # fmt: skip
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython's display
        printer.text(self.summary() if not cycle else "Report(...)")

    def per_task(self) -> dict[str, list]:
        """Columns of per-task values: ``task``, ``nll`` and, per baseline, ``nll_<name>`` and
        ``diff_<name>`` (the method's NLL minus the baseline's on that task)."""
        nll = list(self.get("nll_per_task") or [])
        cols: dict[str, list] = {"task": list(range(len(nll))), "nll": nll}
        for name, base in (self.get("baselines") or {}).items():
            theirs = list(base.get("nll_per_task") or [])
            if len(theirs) == len(nll):
                cols[f"nll_{name}"] = theirs
                cols[f"diff_{name}"] = (np.asarray(nll) - np.asarray(theirs)).tolist()
        return cols

    def to_dataframe(self):
        """:meth:`per_task` as a pandas ``DataFrame`` (pandas is optional: it comes with the
        ``data`` extra)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                'to_dataframe: needs pandas (pip install "bayesmeta[data]"); per_task() gives '
                "the same columns as lists"
            ) from None
        return pd.DataFrame(self.per_task())


__all__ = ["Report"]
