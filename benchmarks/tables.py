"""The result tables of README.md and docs/, generated from the JSON under benchmarks/results.

A generated table sits between two markers in a markdown file::

    <!-- table: core_sinusoid -->
    ... (written by this module; never edit by hand) ...
    <!-- /table -->

``python benchmarks/tables.py`` rewrites every marked block from the result files it names;
``python benchmarks/tables.py --check`` changes nothing and exits 1, naming the stale blocks,
when a committed table differs from what the generator makes of the committed JSON (a test runs
it, so a hand-edited table or a results file rerun without regenerating fails CI).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

#: The repository root: this script lives in its benchmarks/ folder (the generator is a tool
#: of the checkout, not of the installed package, which carries no README.md or results).
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: The markdown files that may hold generated tables.
DOCUMENTS = (
    "README.md",
    "docs/results.md",
    "docs/benchmarks.md",
    "docs/performance.md",
    "docs/methods.md",
    "docs/data_yours.md",
    "docs/models.md",
    "docs/active.md",
    "benchmarks/results/classification.md",
)

_BLOCK = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.DOTALL)


class Table(NamedTuple):
    """A generated table: the result files it reads and how it renders them."""

    sources: tuple[str, ...]
    render: Callable[..., str]


def _load(name: str, root: Path) -> Any:
    return json.loads((root / name).read_text())


def _f(value: Any, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec).replace("-", "−")


# -- renderers ----------------------------------------------------------------------------
def core_table(result: dict) -> str:
    """The per-K table of a core benchmark (``benchmarks/core_table.py``): NLL, the exact
    reference's NLL, the gap, MSE, coverage, calibration error and training seconds."""
    lines = [
        "| method | K | nll | oracle_nll | gap | mse | cov50 | cov90 | cal_err | train_s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    seconds = result.get("train_seconds", {})
    for r in sorted(result["rows"], key=lambda r: r["k"]):
        train = r.get("train_s", seconds.get(r["method"]))
        lines.append(
            f"| {r['method']} | {r['k']} | {r['nll']:.4f} | {r['oracle_nll']:.4f} | "
            f"{r['gap']:+.4f} | {r['mse']:.4g} | {r['coverage']['0.5']:.3f} | "
            f"{r['coverage']['0.9']:.3f} | {r['calibration_error']:.4f} | "
            f"{'-' if r['method'] == 'reference' or train is None else f'{train:.1f}'} |"
        )
    lines += [
        "",
        f"{result['n_tasks']} held-out tasks, {result['samples']} posterior samples; training "
        f"steps {_by_method(result.get('steps'))}; {_made(result)}."
        + (f" Note: {result['note']}" if result.get("note") else ""),
    ]
    return "\n".join(lines) + "\n"


def speed_table(result: dict) -> str:
    """MAML meta-steps per second against its peers (``benchmarks/speed.py``)."""
    lines = [
        "| implementation | meta-steps/s | ms/step | compile s |",
        "|---|---:|---:|---:|",
    ]
    for name, r in result["implementations"].items():
        if "config" in r:  # a copy of the fastest configuration of a peer, not a run of its own
            continue
        lines.append(
            f"| {name} | {r['steps_per_s']:.0f} | {r['ms_per_step']:.3f} | {r['compile_s']:.2f} |"
        )
    machine = result.get("machine", {})
    lines += [
        "",
        f"Ratios: {result['ratio_vs_fused_jax']:.2f}× a hand-fused JAX loop, "
        f"{result['ratio_vs_torch_func']:.1f}× torch.func, {result['ratio_vs_torch_loop']:.0f}× "
        f"a per-task autograd loop, {result['ratio_vs_higher']:.0f}× `higher`; made "
        f"{machine.get('date', '?')} on {machine.get('cpu_count', '?')} CPU cores "
        f"(jax {machine.get('jax', '?')}).",
    ]
    return "\n".join(lines) + "\n"


def _machine(result: dict) -> str:
    """``_made`` of a speed benchmark's ``machine`` record (device, platform, CPUs, jax, date)."""
    m = result.get("machine") or {}
    where = " on ".join(str(m[k]) for k in ("device", "platform") if m.get(k)) or None
    return _made({"machine": where, **{k: m.get(k) for k in ("cpu_count", "jax", "date")}})


def speed_methods(result: dict) -> str:
    """``benchmarks/speed.py methods``: every method's meta-steps per second on the speed
    benchmark's work (one inner step each), and its ratio to MAML's."""
    lines = [
        "| method (one inner step) | meta-steps/s | ratio to MAML |",
        "|---|---:|---:|",
    ]
    for name, r in result.items():
        if isinstance(r, dict) and "steps_per_s" in r:
            lines.append(
                f"| {name} | {r['steps_per_s']:.0f} | {_f(r.get('ratio_vs_maml'), '.2f')} |"
            )
    work = f"Setting: {result['work']}; " if result.get("work") else ""
    return "\n".join(lines + ["", f"{work}{_machine(result)}."]) + "\n"


def speed_sharding(result: dict) -> str:
    """``benchmarks/speed.py sharding``: MAML's meta-steps per second with its tasks split over
    1, 2, 4, ... devices, and the throughput relative to one device."""
    runs = sorted(
        ((int(key.split("_")[1]), r) for key, r in result.items() if key.startswith("devices_")),
        key=lambda kv: kv[0],
    )
    tasks = sorted({round(r["tasks_per_s"] / r["steps_per_s"]) for _, r in runs})
    lines = [
        f"| forced host devices | meta-steps/s ({'/'.join(map(str, tasks))} tasks) | relative |",
        "|---|---:|---:|",
    ]
    for n, r in runs:
        lines.append(f"| {n} | {r['steps_per_s']:.0f} | {_f(r.get('speedup'), '.2f')} |")
    return "\n".join(lines + ["", f"{_machine(result)}."]) + "\n"


def core_bar(
    result: dict,
    gaps: dict[int, float],
    cov90: tuple[float, float],
    method: str = "abml",
    baseline: str = "maml",
) -> str:
    """A core table against an issue's bar: ``method``'s gap to the exact reference at each K
    of ``gaps`` (at most its bar), its 90% coverage at those K (inside ``cov90``), and
    ``baseline``'s gap at the smallest of them (larger than ``method``'s); whether each is met
    is computed from the file's rows."""
    at = {(r["method"], r["k"]): r for r in result["rows"]}
    name, base = method.upper(), baseline.upper()
    lo, hi = cov90
    lines = ["| criterion | measured | met |", "|---|---|---|"]

    def row(label: str, text: str, met: bool) -> None:
        lines.append(f"| {label} | {text} | {'yes' if met else 'no'} |")

    for k, bar in gaps.items():
        gap = (at.get((method, k)) or {}).get("gap")
        row(f"{name} gap, K={k} ≤ {bar:.2f}", _f(gap, ".3f"), gap is not None and gap <= bar)
    for k in gaps:
        r = at.get((method, k))
        cov = None if r is None else _metric(r, "cov90")
        met = cov is not None and lo <= cov <= hi
        row(f"{name} cov90, K={k} in [{lo:.2f}, {hi:.2f}]", _f(cov, ".3f"), met)
    k0 = min(gaps)
    mine, theirs = ((at.get((m, k0)) or {}).get("gap") for m in (method, baseline))
    met = None not in (mine, theirs) and theirs > mine
    row(f"{base} gap at K={k0} > {name}'s", f"{_f(theirs, '.2f')} > {_f(mine, '.2f')}", met)
    steps = (result.get("steps") or {}).get(method)
    line = (
        (f"{result['n_tasks']} held-out tasks; " if result.get("n_tasks") else "")
        + (f"{method} trained {steps} steps; " if steps else "")
        + _made(result) + "."
    )  # fmt: skip
    return "\n".join(lines + ["", line]) + "\n"


STANDARD_METHODS = ("reference", "maml", "emaml", "bmaml", "abml", "platipus", "neural-process")


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (0 for a single value) of ``values``."""
    import math

    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, se


def _mean_se_text(values: Sequence[float]) -> str:
    """``mean ± se``; a single value (one seed so far) is marked, as it has no error bar."""
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return "{:.3f} ± {:.3f}".format(*_mean_se(values))


def _headline(rows: list) -> str:
    """The metric a family is ranked by: the gap to the exact reference where there is one,
    else the held-out NLL (both lower-is-better)."""
    return (
        "gap"
        if any(r.get("gap") is not None and r["method"] != "reference" for r in rows)
        else "nll"
    )


def _provenance_line(rows: list) -> str:
    seeds = sorted({r["seed"] for r in rows})
    prov = next((r for r in rows if r.get("commit")), {})
    commits = sorted({r["commit"] for r in rows if r.get("commit")})
    commands = sorted({r["command"] for r in rows if r.get("command")}) or ["?"]
    samples = sorted({r["samples"] for r in rows if r.get("samples") is not None})
    return (
        f"Seeds {seeds}; budget `{prov.get('budget', '?')}`, commit {', '.join(commits) or '?'}, "
        f"{'/'.join(str(n) for n in samples) or '?'} posterior samples, "
        f"{prov.get('machine', '?')}; " + ", ".join(f"`{c}`" for c in commands) + "."
    )


def still_falling(curve: dict, steps: int, k: int = 5) -> float | None:
    """From a time-to-quality curve (validation gaps after each chunk of one run): how much
    the gap fell over the second half of ``steps`` steps, ``gap(steps / 2) − gap(steps)`` —
    about zero where the method has reached its plateau at that budget, what one more
    doubling of the steps may still give where not. None where the run stopped short of
    ``steps`` or was not yet scored by ``steps / 2``."""
    pts = list(zip(curve["step"], curve[f"gap_k{k}"], strict=True))
    end = [g for s, g in pts if s >= steps]
    half = [g for s, g in pts if s <= steps / 2]
    if not end or not half:
        return None
    return half[-1] - end[0]


def standard_family(rows: list, family: str = "sinusoid", ttq: dict | None = None) -> str:
    """One family of the ``standard`` calibration budget: per method and K, the gap to the
    exact reference (or, without one, the held-out NLL), mean ± standard error over the seeds;
    at the middle K the 90% coverage and calibration error (regression) or accuracy and ECE
    (classification); the steps and the mean training seconds per run. With ``ttq`` (the
    time-to-quality result) a column says how far each method still was from its plateau at
    these steps (:func:`still_falling` on its validation curve)."""
    sel = [r for r in rows if r["family"] == family and r.get("nll") is not None]
    if not sel:
        return f"No {family} rows in the results file yet.\n"
    ks = sorted({r["k"] for r in sel})
    k_mid = 5 if 5 in ks else ks[0]
    metric = _headline(sel)
    classify = any(r.get("accuracy") is not None for r in sel)
    extra = ("accuracy", "ece") if classify else ("cov90", "calibration_error")
    names = {
        "accuracy": "accuracy",
        "ece": "ECE",
        "cov90": "cov90",
        "calibration_error": "cal. err.",
    }
    curves = {c["method"]: c for c in (ttq or {}).get("curves", []) if c["family"] == family}
    plateau = bool(curves)
    lines = [
        "| method | "
        + " | ".join(f"{metric} K={k}" for k in ks)
        + "".join(f" | {names[e]} K={k_mid}" for e in extra)
        + " | steps | train s |"
        + (" still falling K=5 |" if plateau else ""),
        "|---|" + "---:|" * (len(ks) + len(extra) + 2 + plateau),
    ]
    for m in STANDARD_METHODS:
        rs = [r for r in sel if r["method"] == m]
        if not rs:
            continue
        cells = []
        for k in ks:
            vals = [r[metric] for r in rs if r["k"] == k]
            cells.append("–" if not vals else _mean_se_text(vals))
        for e in extra:
            vals = [r[e] for r in rs if r["k"] == k_mid and r.get(e) is not None]
            cells.append("–" if not vals else f"{statistics.fmean(vals):.3f}")
        steps = sorted({r["steps"] for r in rs})
        secs = statistics.fmean(r.get("train_seconds") or 0.0 for r in rs if r["k"] == ks[0])
        fall = ""
        if plateau:
            c = curves.get(m)
            value = still_falling(c, steps[-1]) if c and len(steps) == 1 else None
            fall = f" {_f(value, '+.3f')} |"
        lines.append(
            f"| {m} | " + " | ".join(cells) + f" | {'/'.join(str(s) for s in steps)} | {secs:.0f} |"
            + fall
        )  # fmt: skip
    notes = ["", _provenance_line(sel)]
    if plateau:
        notes += [
            "",
            "still falling: the validation gap at K = 5 after half of the row's steps minus "
            "after all of them, from one run per method (seed 0) of `time_to_quality.json` "
            f"({_ttq_sources(ttq, list(curves.values()))}): near 0 at the method's plateau; "
            "– where that run did not reach the row's steps.",
        ]
    return "\n".join(lines + notes) + "\n"


def _ranking(rows: list, family: str, k: int, metric: str) -> list[tuple[str, dict[int, float]]]:
    """Learned methods of one family and K, best first by their mean ``metric`` over seeds:
    ``[(method, {seed: value})]``."""
    by_method: dict[str, dict[int, float]] = {}
    for r in rows:
        if (
            (r["family"], r["k"]) == (family, k)
            and r["method"] != "reference"
            and r.get(metric) is not None
        ):
            by_method.setdefault(r["method"], {})[r["seed"]] = r[metric]
    return sorted(by_method.items(), key=lambda kv: statistics.fmean(kv[1].values()))


def standard_best(rows: list) -> str:
    """Per family and K of the ``standard`` budget: the best learned method by the family's
    headline metric (gap to the exact reference, else held-out NLL), its mean ± standard error
    over seeds, the runner-up, and the margin between them ± the standard error of the paired
    per-seed differences (both trained on the same seed's task stream and scored on the same
    test tasks)."""
    from bayesmeta.bench import FAMILIES

    lines = [
        "| family | K | metric | best | its value | runner-up | margin (paired) | seeds |",
        "|---|---:|---|---|---:|---|---:|---:|",
    ]
    for family in FAMILIES:
        sel = [r for r in rows if r["family"] == family and r.get("nll") is not None]
        if not sel:
            continue
        metric = _headline(sel)
        for k in sorted({r["k"] for r in sel}):
            ranked = _ranking(sel, family, k, metric)
            if not ranked:
                continue
            (best, b), *rest = ranked
            value = _mean_se_text(list(b.values()))
            if rest:
                second, s2 = rest[0]
                common = sorted(set(b) & set(s2))
                diffs = [s2[s] - b[s] for s in common]
                margin = _mean_se_text(diffs) if diffs else "–"
            else:
                second, margin = "–", "–"
            label = FAMILIES[family].label or family
            lines.append(
                f"| {label} | {k} | {metric} | {best} | {value} | {second} | {margin} | {len(b)} |"
            )
    return "\n".join(lines + ["", _provenance_line(rows)]) + "\n"


def standard_summary(rows: list) -> str:
    """The ``standard`` budget in one table: per method, each family's headline metric at its
    middle K (gap to the exact reference where there is one, else held-out NLL; glyphs also
    accuracy), mean ± standard error over seeds; the best learned method of a column in bold."""
    from bayesmeta.bench import FAMILIES

    cols = []
    for family in FAMILIES:
        sel = [r for r in rows if r["family"] == family and r.get("nll") is not None]
        if not sel:
            continue
        ks = sorted({r["k"] for r in sel})
        k = 5 if 5 in ks else ks[0]
        metric = _headline(sel)
        cols.append((family, k, metric))
        if any(r.get("accuracy") is not None for r in sel):
            cols.append((family, k, "accuracy"))
    if not cols:
        return "No rows in the results file yet.\n"
    head = [f"{FAMILIES[f].label or f} {m} K={k}" for f, k, m in cols]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---:|" * len(cols)]
    best = {}
    for f, k, m in cols:
        ranked = _ranking(rows, f, k, m)
        if ranked:
            best[(f, k, m)] = (ranked[-1] if m == "accuracy" else ranked[0])[0]
    for method in STANDARD_METHODS:
        cells, any_value = [], False
        for f, k, m in cols:
            vals = [r[m] for r in rows if (r["family"], r["method"], r["k"]) == (f, method, k)
                    and r.get(m) is not None]  # fmt: skip
            if not vals:
                cells.append("–")
                continue
            any_value = True
            text = _mean_se_text(vals)
            cells.append(f"**{text}**" if best.get((f, k, m)) == method else text)
        if any_value:
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", _missing_runs(rows, "standard") + _provenance_line(rows)]) + "\n"


def _missing_runs(rows: list, budget: str, families: Sequence[str] | None = None) -> str:
    """A sentence naming the budget's (family, method, seed) runs that have no rows yet (of
    ``families`` only, when given)."""
    from bayesmeta.bench import BUDGETS, METHODS, units

    b = BUDGETS[budget]
    have = {(r["family"], r["method"], r["seed"]) for r in rows if r.get("nll") is not None}
    fams = families if families is not None else (b.families or ())
    missing = [u for u in units(fams, b.methods or METHODS, b.seeds) if u not in have]
    if not missing:
        return ""
    runs: dict[tuple[str, str], list[int]] = {}
    for f, m, seed in missing:
        runs.setdefault((f, m), []).append(seed)
    named = "; ".join(f"{f}/{m} seed{'s' * (len(v) > 1)} {', '.join(map(str, v))}"
                      for (f, m), v in runs.items())  # fmt: skip
    return f"Not run yet ({len(missing)} of the grid's runs): {named}. "


def _seed_cell(rs: list, key: str, digits: int = 3) -> str:
    """``mean ± se`` of ``key`` over the seeds' rows ``rs``; with one seed, ± the standard
    error over its test tasks (``<key>_se``) where the row has it."""
    vals = [r[key] for r in rs if r.get(key) is not None]
    if not vals:
        return "–"
    if len(vals) > 1:
        se = statistics.stdev(vals) / len(vals) ** 0.5
    else:
        se = rs[0].get(f"{key}_se")
    mean = f"{statistics.fmean(vals):.{digits}f}"
    return mean if se is None else f"{mean} ± {se:.{digits}f}"


def classification_summary(rows: list) -> str:
    """The ``classification`` budget in one table: per classifier, accuracy and ECE on each
    family at its smallest and largest K (mean ± se over seeds, the most accurate in bold),
    and the seeds run per family."""
    from bayesmeta.bench import CLASSIFIERS

    sel = [r for r in rows if r.get("nll") is not None and r.get("accuracy") is not None]
    fams = list(dict.fromkeys(r["family"] for r in sel))
    cols = []
    for f in fams:
        ks = {r["k"] for r in sel if r["family"] == f}
        cols += [(f, k) for k in sorted({min(ks), max(ks)})]
    head = " | ".join(f"{f} {k}-shot accuracy | ECE" for f, k in cols)
    lines = [
        f"| method | {head} | seeds ({' / '.join(fams)}) |",
        "|---|" + "---:|" * (2 * len(cols) + 1),
    ]
    mean = {}
    for f, k in cols:
        for m in CLASSIFIERS:
            acc = [r["accuracy"] for r in sel if (r["family"], r["k"], r["method"]) == (f, k, m)]
            if acc:
                mean[(f, k, m)] = statistics.fmean(acc)
    best = {c: max((v, m) for (f, k, m), v in mean.items() if (f, k) == c)[1]
            for c in cols if any((c[0], c[1], m) in mean for m in CLASSIFIERS)}  # fmt: skip
    for m in CLASSIFIERS:
        if not any(r["method"] == m for r in sel):
            continue
        cells = []
        for f, k in cols:
            rs = [r for r in sel if (r["family"], r["k"], r["method"]) == (f, k, m)]
            acc = _seed_cell(rs, "accuracy")
            cells += [f"**{acc}**" if best.get((f, k)) == m else acc, _seed_cell(rs, "ece")]
        seeds = " / ".join(
            str(len({r["seed"] for r in sel if (r["family"], r["method"]) == (f, m)})) for f in fams
        )
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {seeds} |")
    lines += ["", _missing_runs(rows, "classification") + _provenance_line(sel)]
    return "\n".join(lines) + "\n"


def classification_family(rows: list, family: str = "glyphs") -> str:
    """One family of the ``classification`` budget: per K and method, accuracy, ECE, MCE,
    Brier and NLL (mean ± standard error over the seeds; with one seed, ± the standard error
    over its test tasks), the ECE after temperature scaling with T fitted on validation
    classes, the validation-chosen step and the training seconds per run."""
    from bayesmeta.bench import CLASSIFIERS

    sel = [r for r in rows if r["family"] == family and r.get("nll") is not None]
    if not sel:
        return f"No {family} rows in the results file yet.\n"
    ks = sorted({r["k"] for r in sel})
    lines = [
        "| K | method | seeds | accuracy | ECE | MCE | Brier | NLL | ECE at T (T) | best step "
        "| train s |",
        "|---:|---|---:|" + "---:|" * 8,
    ]

    cell = _seed_cell

    for k in ks:
        for m in CLASSIFIERS:
            rs = [r for r in sel if r["k"] == k and r["method"] == m]
            if not rs:
                continue
            t = [r["temperature"] for r in rs if r.get("temperature") is not None]
            ts = cell(rs, "ts_ece") + (f" ({statistics.fmean(t):.2f})" if t else "")
            best = "/".join(str(r.get("best_step", r["steps"])) for r in rs)
            secs = statistics.fmean(r["train_seconds"] for r in rs)
            lines.append(
                f"| {k} | {m} | {len(rs)} | {cell(rs, 'accuracy')} | {cell(rs, 'ece')} | "
                f"{cell(rs, 'mce')} | {cell(rs, 'brier')} | {cell(rs, 'nll')} | {ts} | {best} "
                f"| {secs:.0f} |"
            )
    prov = next((r for r in sel if r.get("commit")), {})
    tasks = sorted({r.get("n_tasks") for r in sel if r.get("n_tasks")})
    commits = sorted({r["commit"] for r in sel if r.get("commit")}) or ["?"]
    commands = sorted({r["command"] for r in sel if r.get("command")}) or ["?"]
    lines += [
        "",
        _missing_runs(rows, "classification", (family,))
        + f"Budget `{prov.get('budget', '?')}`, commit {', '.join(commits)}, "
        f"{prov.get('samples', '?')} posterior samples per task"
        + (f", {'/'.join(map(str, tasks))} test tasks per seed and K" if tasks else "")
        + f", {prov.get('machine', '?')}; "
        + ", ".join(f"`{c}`" for c in commands)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def ci_timings(record: dict) -> str:
    """README's sentence on the test tiers' size and time, from the timing file that
    ``.ci/run`` writes (``ci_timings.json``)."""
    sec, tests = record["seconds"], record["tests"]
    return (
        f"In the clean-clone run of `.ci/run` at commit {record['commit']} "
        f"({record['date']}, {record['machine']}) the default tier ran "
        f"{tests['default_tier']:,} tests in {sec['default_tier']:,} s and the slow tier "
        f"{tests['slow_tier']:,} in {sec['slow_tier']:,} s; the docs build with the executed "
        f"tutorials took {sec['docs']:,} s, the main job at a 5-second budget "
        f"{sec['main_job']:,} s, and the whole of CI, install included, {sec['total']:,} s "
        "(`benchmarks/results/ci_timings.json`).\n"
    )


def main_job_table(report: dict) -> str:
    """``bayesmeta run``'s report (``benchmarks/results/run/report.json``): per method and K
    the gap to the exact posterior and 90% coverage, the steps and training seconds, and the
    method closest to the exact posterior at each K."""
    ks = sorted({r["k"] for r in report["rows"]})
    methods = list(dict.fromkeys(r["method"] for r in report["rows"]))
    lines = [
        "| method | " + " | ".join(f"gap K={k}" for k in ks) + " | "
        + " | ".join(f"cov90 K={k}" for k in ks) + " | steps | train s |",
        "|---|" + "---:|" * (2 * len(ks) + 2),
    ]  # fmt: skip
    for m in methods:
        by_k = {r["k"]: r for r in report["rows"] if r["method"] == m}
        gaps = " | ".join(_f(by_k[k].get("gap"), ".3f") for k in ks)
        covs = " | ".join(_f(by_k[k]["coverage"]["0.9"], ".3f") for k in ks)
        steps = report.get("steps", {}).get(m, 0)
        secs = report.get("train_seconds", {}).get(m)
        lines.append(f"| {m} | {gaps} | {covs} | {steps} | {_f(secs, '.0f')} |")
    best = report.get("closest_to_oracle", {})
    lines += [
        "",
        "Closest to the exact posterior: "
        + ", ".join(f"K={k}: {best.get(str(k), '?')}" for k in ks)
        + f". {report['n_tasks']} held-out tasks, {report.get('samples', '?')} posterior "
        f"samples, seed {report.get('seed', '?')}, {report['total_seconds']:.0f} s for the job; "
        f"commit {report.get('commit', '?')}, `{report.get('command', '?')}`, "
        f"{report.get('machine', '?')}.",
    ]
    return "\n".join(lines) + "\n"


def time_to_quality(result: dict) -> str:
    """``benchmarks/time_to_quality.py``: per family and method, the training seconds to come
    within 0.5, 0.2 and 0.1 nats of the exact posterior on validation tasks at K = 1 and 5
    (– where the run never did), and the gaps at the end of the standard budget's steps."""
    levels = [str(v) for v in result["thresholds"]]
    head = " | ".join(f"K={k} ≤{v}" for k in (1, 5) for v in levels)
    lines = [
        f"| family | method | steps | {head} | final gap K=1 | final gap K=5 |",
        "|---|---|---:|" + "---:|" * (2 * len(levels) + 2),
    ]
    for c in result["curves"]:
        cells = [_f(c[f"seconds_to_gap_k{k}"][v], ".0f") for k in (1, 5) for v in levels]
        lines.append(
            f"| {c['family']} | {c['method']} | {c['steps']} | " + " | ".join(cells)
            + f" | {c['gap_k1'][-1]:.3f} | {c['gap_k5'][-1]:.3f} |"
        )  # fmt: skip
    lines += [
        "",
        "Seconds of training (the first chunk's compilation included, scoring excluded); "
        + _ttq_sources(result)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _ttq_sources(result: dict, curves: list | None = None) -> str:
    """Which run made which time-to-quality curves: per distinct command, its validation
    tasks, samples, commit, machine and date, and the curves it made where the file holds
    more than one run's (``--merge``)."""
    curves = result["curves"] if curves is None else curves
    runs: dict[str, tuple[dict, list[str]]] = {}
    for c in curves:
        prov = c.get("provenance", result["provenance"])
        key = f"{prov.get('commit')} {prov.get('command')}"
        runs.setdefault(key, (prov, []))[1].append(f"{c['family']}/{c['method']}")
    parts = []
    for prov, made in runs.values():
        which = f" ({', '.join(made)})" if len(runs) > 1 else ""
        parts.append(
            f"{prov.get('validation_tasks', '?')} validation tasks per K, "
            f"{prov.get('samples', '?')} posterior samples, commit {prov.get('commit', '?')}, "
            f"`{prov.get('command', '?')}`, {prov.get('machine', '?')}, "
            f"{prov.get('date', '?')}{which}"
        )
    return "; ".join(parts)


def reruns(*results: dict) -> str:
    """``benchmarks/rerun_row.py``: per rerun of a published row, where the row and the rerun
    ran, what was compared (every metric of the row, or the NLL only in files written before
    the script compared them all) and the largest difference over its K."""
    lines = [
        "| row | published (commit, machine) | rerun (commit, machine, date) | K | compared "
        "| max abs Δ | tolerance | same? |",
        "|---|---|---|---|---|---:|---:|---|",
    ]
    for r in results:
        row, pub, host = r["row"], r["published"], r.get("host") or {}
        boot = f"boot {host['boot_id'][:8]}" if host.get("boot_id") else "boot not recorded"
        ks = ", ".join(str(c["k"]) for c in r["comparison"])
        fields = r["comparison"][0].get("fields")
        compared = f"{len(fields)} fields" if fields else "NLL only"
        lines.append(
            f"| {row['family']} / {row['method']} / seed {row['seed']} | {pub.get('commit')}, "
            f"{pub.get('machine')} | {r.get('commit')}, {r.get('machine')}, {r.get('date')}, "
            f"{boot} | {ks} | {compared} | "
            f"{r['max_abs_difference']:.1e} | {r['tolerance']} | {'yes' if r['passed'] else 'NO'} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def _made(result: dict) -> str:
    """Where and when a result was made, from whichever provenance keys it has (commit,
    command, machine, CPUs, jax, date, seconds), at the top level or under ``provenance``; a
    file written before the benchmarks recorded their commit says so."""
    result = {**(result.get("provenance") or {}), **result}
    parts = []
    if result.get("commit"):
        parts.append(f"commit {result['commit']}")
    else:
        parts.append("commit and command not recorded (written before files carried them)")
    if result.get("command"):
        parts.append(f"`{result['command']}`")
    if result.get("machine"):
        cpus = result.get("cpu_count")
        parts.append(result["machine"] + (f" ({cpus} CPUs)" if cpus else ""))
    if result.get("jax"):
        parts.append(f"jax {result['jax']}")
    if result.get("date"):
        parts.append(str(result["date"]))
    if result.get("seconds") is not None:
        parts.append(f"{result['seconds']:.0f} s")
    return "made: " + ", ".join(parts)


def _by_method(values: dict | None) -> str:
    """``{"bmaml": 9000, "emaml": 20000}`` as ``"bmaml 9000, emaml 20000"``."""
    return ", ".join(f"{m} {v}" for m, v in (values or {}).items())


#: Per-row metrics of the K tables: the name a column uses and how a result row holds it.
_METRICS: dict[str, Callable[[dict], Any]] = {
    "cov50": lambda r: r["coverage"]["0.5"],
    "cov90": lambda r: r["coverage"]["0.9"],
    "cal_err": lambda r: r.get("calibration_error"),
}


def _metric(row: dict, name: str) -> Any:
    return _METRICS[name](row) if name in _METRICS else row.get(name)


def _best_gap(rows: list) -> dict[int, str]:
    """Per K, the learned method (not the exact reference) with the smallest gap."""
    best: dict[int, tuple[float, str]] = {}
    for r in rows:
        if r["method"] != "reference" and r.get("gap") is not None:
            if r["k"] not in best or r["gap"] < best[r["k"]][0]:
                best[r["k"]] = (r["gap"], r["method"])
    return {k: m for k, (_, m) in best.items()}


def _ensemble_note(result: dict) -> str:
    """Where an ensembles comparison's rows came from: the methods trained by the run itself
    (in ``steps``), rows kept from its previous run, and the rest copied from the core table."""
    kept = result.get("rows_kept_from_previous_run") or []
    trained = [m for m in result.get("steps", {}) if m not in kept]
    copied = [m for m in dict.fromkeys(r["method"] for r in result["rows"])
              if m not in result.get("steps", {})]  # fmt: skip
    text = f"{result['n_tasks']} held-out tasks; " if result.get("n_tasks") else ""
    if trained:
        text += f"trained by this run: {', '.join(trained)}; "
    if kept:
        text += f"kept from its previous run: {', '.join(kept)}; "
    if copied and result.get("maml_rows_from"):
        text += f"{', '.join(copied)} rows from `{result['maml_rows_from']}`; "
    if result.get("steps"):
        text += f"training steps {_by_method(result['steps'])}; "
    if result.get("train_seconds"):
        text += f"training seconds {_by_method(result['train_seconds'])}; "
    text += _made(result) + "."
    return text + (f" Note: {result['note']}." if result.get("note") else "")


def ensembles_table(result: dict) -> str:
    """``benchmarks/ensembles.py compare``: per K and method the held-out NLL, the gap to the
    exact reference (the smallest learned gap of each K in bold), MSE, 50% and 90% coverage and
    calibration error; under it, which rows the run trained, kept or copied from the core table."""
    lines = [
        "| method | K | nll | gap | mse | cov50 | cov90 | cal_err |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    best = _best_gap(result["rows"])
    for r in sorted(result["rows"], key=lambda r: r["k"]):
        gap = _f(r.get("gap"), "+.4f")
        gap = f"**{gap}**" if best.get(r["k"]) == r["method"] else gap
        lines.append(
            f"| {r['method']} | {r['k']} | {r['nll']:.4f} | {gap} | {r['mse']:.4g} | "
            f"{_metric(r, 'cov50'):.3f} | {_metric(r, 'cov90'):.3f} | "
            f"{_f(r.get('calibration_error'), '.4f')} |"
        )
    return "\n".join(lines + ["", _ensemble_note(result)]) + "\n"


#: Column headers of the per-method K tables, by metric.
_HEADERS = {"gap": "gap", "cov90": "cov90", "mse": "MSE", "cal_err": "cal_err",
            "hyp_cov": "hypothesis coverage"}  # fmt: skip


def per_method_table(
    result: dict, columns: Sequence[tuple[str, int, str]], bold_gap: bool = True
) -> str:
    """One row per method (the file's order), one column per ``(metric, K, format)``: the gap
    to the exact reference, 90% coverage, MSE, calibration error or hypothesis coverage (the
    share of ambiguous tasks whose samples cover both hypotheses; its column names how many
    tasks were ambiguous). With ``bold_gap`` the smallest learned gap of each K is in bold."""
    rows = result["rows"]
    at = {(r["method"], r["k"]): r for r in rows}
    best = _best_gap(rows) if bold_gap else {}
    heads = []
    for metric, k, _ in columns:
        head = f"{_HEADERS.get(metric, metric)} K={k}"
        n = sorted({r["n_ambiguous"] for r in rows if r["k"] == k and "n_ambiguous" in r})
        if metric == "hyp_cov" and n:
            head += f" (n={'/'.join(map(str, n))})"
        heads.append(head)
    lines = ["| method | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(columns)]
    for m in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for metric, k, spec in columns:
            r = at.get((m, k))
            text = _f(None if r is None else _metric(r, metric), spec)
            cells.append(f"**{text}**" if metric == "gap" and best.get(k) == m else text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ensembles_wide(result: dict) -> str:
    """``benchmarks/ensembles.py compare`` on a family with K = 1, 5, 10, one row per method:
    the gap to the exact reference at each K (the smallest learned one in bold), 90% coverage
    at each K, and MSE and calibration error at K = 5; under it, which rows the run trained,
    kept or copied from the core table."""
    ks = sorted({r["k"] for r in result["rows"]})
    mid = 5 if 5 in ks else ks[len(ks) // 2]
    columns = ([("gap", k, ".3f") for k in ks] + [("cov90", k, ".3f") for k in ks]
               + [("mse", mid, ".3f"), ("cal_err", mid, ".3f")])  # fmt: skip
    return per_method_table(result, columns) + "\n" + _ensemble_note(result) + "\n"


def ambiguity_table(result: dict) -> str:
    """``benchmarks/ambiguity.py``, one row per method: the gap to the exact reference at each
    K, 90% coverage at the smallest K and at K = 5, MSE at K = 5, and the hypothesis coverage
    at the smallest K (share of the ambiguous tasks whose samples cover both hypotheses)."""
    rows = result["rows"]
    ks = sorted({r["k"] for r in rows})
    mid = 5 if 5 in ks else ks[-1]
    columns = ([("gap", k, ".3f") for k in ks] + [("cov90", ks[0], ".3f"), ("cov90", mid, ".3f"),
               ("mse", mid, ".2f"), ("hyp_cov", ks[0], ".2f")])  # fmt: skip
    seconds = {r["method"]: r["train_s"] for r in rows if r.get("train_s") is not None}
    line = (
        f"{result.get('n_tasks', '?')} held-out tasks, {result.get('samples', '?')} posterior "
        "samples; "
        + (f"training seconds {_by_method({m: round(s) for m, s in seconds.items()})}; "
           if seconds else "")
        + _made(result) + "."
    )  # fmt: skip
    return per_method_table(result, columns, bold_gap=False) + "\n" + line + "\n"


def bmaml_setting(result: dict) -> str:
    """``benchmarks/ensembles.py setting`` (BMAML's own sinusoid setting): per training-task
    pool and K, each method's MSE and NLL on fresh tasks; under it, each model's steps."""
    rows = result["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    at = {(r["method"], r["pool"], r["k"]): r for r in rows}
    keys = sorted({(r["pool"], r["k"]) for r in rows})
    heads = [f"{m.upper()} {name}" for name in ("MSE", "NLL") for m in methods]
    lines = [
        "| pool | K | " + " | ".join(heads) + " |",
        "| ---: | ---: |" + " ---: |" * len(heads),
    ]
    for pool, k in keys:
        mse = [_f(at.get((m, pool, k), {}).get("mse"), ".4f") for m in methods]
        nll = [_f(at.get((m, pool, k), {}).get("nll"), ".3f") for m in methods]
        lines.append(f"| {pool} | {k} | " + " | ".join(mse + nll) + " |")
    pools = sorted({p for p, _ in keys})
    by_pool = {(r["method"], r["pool"]): r["steps"] for r in rows if r.get("steps") is not None}
    steps = "; ".join(
        f"{m} " + " / ".join(str(by_pool.get((m, p), "?")) for p in pools) for m in methods
    )
    budget = result.get("seconds_per_model")
    lines += [
        "",
        (f"At most {budget:.0f} s of training per model; " if budget is not None else "")
        + f"steps (pool {' / '.join(map(str, pools))}): {steps}; {_made(result)}.",
    ]
    return "\n".join(lines) + "\n"


def active_table(result: dict) -> str:
    """``benchmarks/active.py``: per method and acquisition, the task metric the file records
    (MSE for regression, accuracy for classification) after each recorded number of queries,
    and Δ, the mean over tasks of acquisition − random ± its paired standard error (– for
    random itself); the time of one step of the compiled loop."""
    rows = result["rows"]
    keys = [key for r in rows for key in r if "@" in key and not key.startswith(("d_", "se_"))]
    metric = next(key.split("@")[0] for key in keys if not key.startswith("nll@"))
    counts = sorted({int(key.split("@")[1]) for key in keys})
    name = "MSE" if metric == "mse" else metric
    heads = " | ".join(f"{name}@{n} | Δ@{n}" for n in counts)
    lines = [
        f"| method | acquisition | {heads} | step (ms) |",
        "| --- | --- |" + " ---: |" * (2 * len(counts) + 1),
    ]
    for r in rows:
        cells = []
        for n in counts:
            d, se = r.get(f"d_{metric}@{n}"), r.get(f"se_{metric}@{n}")
            delta = "–" if d is None else _f(d, "+.3f") + ("" if se is None else f" ± {se:.3f}")
            cells += [_f(r.get(f"{metric}@{n}"), ".3f"), delta]
        acq = "BALD" if r["acquisition"] == "bald" else r["acquisition"]
        step = _f(r.get("step_ms"), ".0f")
        lines.append(f"| {r['method']} | {acq} | " + " | ".join(cells) + f" | {step} |")
    setup = ", ".join(
        text.format(result[key])
        for key, text in (("n_tasks", "{} held-out tasks"), ("k", "K = {}"), ("pool", "pool {}"),
                          ("n_eval", "{} evaluation points"), ("queries", "{} queries"),
                          ("samples", "{} posterior samples"), ("seed", "seed {}"))
        if result.get(key) is not None
    )  # fmt: skip
    # the command names the models' run directories; without one, say where each came from
    models = "; ".join(
        f"{m}: {v.get('source', '?')}"
        + (f", {v['steps']} steps" if v.get("steps") else "")
        + (f", {v['train_s']:.0f} s" if v.get("train_s") else "")
        for m, v in result.get("methods", {}).items()
        if v.get("steps") or not result.get("command")
    )
    lines += [
        "",
        f"Model `{result.get('model', '?')}`; {setup}; Δ is acquisition − random, paired over "
        f"tasks, ± its standard error; " + (f"models: {models}; " if models else "")
        + f"{_made(result)}.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def real_data_summary(result: dict) -> str:
    """``benchmarks/real_data.py``: per data set at its largest K, ``auto`` against the linear
    mixed model (NLL difference ± paired se, over split seeds), pooled linear's difference,
    what auto chose, and the 90% coverage of auto's own intervals, of the mixed model's and of
    auto's split-conformal ones (fitted on the validation groups)."""
    rows = result["summary"]
    by = {(r["data"], r["k"], r["method"]): r for r in rows}
    lines = [
        "| data set | K | groups | auto − mixed | pooled − mixed | auto chose | cov90 auto "
        "| cov90 mixed | cov90 conformal |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for data in sorted({r["data"] for r in rows}, key=str.lower):
        k = max(r["k"] for r in rows if r["data"] == data)
        auto, pooled = by[(data, k, "auto")], by[(data, k, "pooled_linear")]
        cal, mixed = by.get((data, k, "auto_calibrated")), by.get((data, k, "mixed_model"))
        diff = f"{_f(auto['diff_vs_mixed'], '+.3f')} ± {_f(auto['diff_se'], '.3f')}"
        lines.append(
            f"| {data} | {k} | {auto['n_groups']} | {diff} | "
            f"{_f(pooled['diff_vs_mixed'], '+.3f')} | {auto['chosen']} | "
            f"{_f(auto['cov90'], '.2f')} | {_f(mixed and mixed['cov90'], '.2f')} | "
            f"{_f(cal and cal['cov90'], '.2f')} |"
        )
    lines += [
        "",
        f"Split seeds {result['split_seeds']}; commit {result['commit']}; "
        f"`{result['command']}`; {result['date']}; "
        f"{result['total_seconds'] / 60:.0f} min (all K and rows: "
        "`benchmarks/results/real_data.md`).",
    ]
    return "\n".join(lines) + "\n"


def nested_linear_summary(result: dict) -> str:
    """``benchmarks/nested_linear.py``: per method, the largest and the mean difference to the
    exact empirical-Bayes posterior over data sets and K, and how many cells are within the
    bar."""
    lines = [
        "| method | cells within " + f"{result['bar']}" + " | mean difference | largest |",
        "|---|---:|---:|---:|",
    ]
    for m in result["methods"]:
        rs = [r for r in result["rows"] if r["method"] == m]
        if not rs:
            continue
        d = [r["diff"] for r in rs]
        within = sum(x <= result["bar"] for x in d)
        lines.append(f"| {m} | {within} of {len(d)} | {_f(statistics.fmean(d), '+.3f')} | "
                     f"{_f(max(d), '+.3f')} |")  # fmt: skip
    lines += ["", f"Commit {result['commit']}; `{result['command']}`; {result['date']} "
              "(every cell: `benchmarks/results/nested_linear.md`)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def generic_path_speed(result: dict) -> str:
    """``benchmarks/generic_path.py --speed``: per method, the time per meta-step on the
    built-in model and on the same model as a NumPyro function, and their ratio."""
    speed = result["speed"]
    lines = [
        "| method | built-in ms/step | NumPyro function ms/step | ratio |",
        "|---|---:|---:|---:|",
    ]
    for r in speed["rows"]:
        lines.append(f"| {r['method']} | {1e3 * r['builtin_s']:.2f} | {1e3 * r['generic_s']:.2f} "
                     f"| {r['ratio']:.2f} |")  # fmt: skip
    p = speed["provenance"]
    lines += ["", f"Commit {p['commit']}; `{p['command']}`; {p['machine']}; {p['date']}; best of "
              f"{p['repeats']} interleaved calls of {p['steps_per_call']} steps each."]  # fmt: skip
    return "\n".join(lines) + "\n"


def student_t_gap(result: dict) -> str:
    """``benchmarks/student_t_gap.py``: per method and K, a user's model's NLL beside the exact
    predictive on the same tasks, and the paired gap."""
    lines = [
        "| method | K | steps | NLL ± se | exact NLL | gap ± se | cov90 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['k']} | {r['steps']} | {_f(r['nll'], '.3f')} ± "
            f"{_f(r['nll_se'], '.3f')} | {_f(r['exact_nll'], '.3f')} | {_f(r['gap'], '+.3f')} ± "
            f"{_f(r['gap_se'], '.3f')} | {_f(r['cov90'], '.2f')} |"
        )
    p = result["provenance"]
    lines += ["", f"Commit {p['commit']}; `{p['command']}`; {p['machine']}; {p['date']}; "
              f"{p['num_tasks']} tasks per K from the `{p.get('test_stream', 'test')}` stream; "
              f"{p['seconds']:.0f} s."]  # fmt: skip
    return "\n".join(lines) + "\n"


def scaling_groups(result: dict) -> str:
    """``benchmarks/scaling_groups.py``: per pool size and mode, amortized training's groups/s
    and its child process's peak and anonymous memory."""
    lines = [
        "| groups | pool MB | mode | groups/s | peak RSS MB | anonymous MB |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['groups']:,} | {r['pool_mb']:.0f} | {r['mode']} | "
            f"{r['groups_per_second']:,.0f} | {r['peak_rss_mb']:.0f} | "
            f"{_f(r.get('rssanon'), '.0f')} |"
        )
    p = result["provenance"]
    lines += ["", f"Commit {p['commit']}; `{p['command']}`; {p['machine']}; {p['date']}; "
              f"meta-batch {p['meta_batch']}, {p['steps']} meta-steps per row (timed over the "
              f"last {p['timed_steps']}); {p['seconds']:.0f} s."]  # fmt: skip
    return "\n".join(lines) + "\n"


def active_families(result: dict) -> str:
    """``benchmarks/active_families.py``: per family, method and acquisition, the curves' mean
    over labels 2-6, the paired difference to random and the captured fraction of the exact
    posterior's advantage."""
    lines = [
        "| family | method | acquisition | NLL 2–6 | vs random | captured | metric | "
        "2–6 | vs random | captured |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]

    def vs(r, k):
        d = r.get(f"{k}_vs_random")
        return "–" if d is None else f"{_f(d, '+.3f')} ± {_f(r[f'{k}_vs_random_se'], '.3f')}"

    for r in result["rows"]:
        m = r["metric"]
        lines.append(
            f"| {r['family']} | {r['method']} | {r['acquisition']} | "
            f"{_f(r['nll_window'], '.3f')} | {vs(r, 'nll')} | {_f(r.get('nll_captured'), '.2f')} "
            f"| {m} | {_f(r[f'{m}_window'], '.3f')} | {vs(r, m)} | "
            f"{_f(r.get(f'{m}_captured'), '.2f')} |"
        )
    p = result["provenance"]
    lines += ["", f"Commit {p['commit']}; `{p['command']}`; {p['machine']}; {p['date']}; "
              f"{p['num_tasks']} held-out tasks per family (fresh stream, seed "
              f"{p['task_seed']}), K = {p['k']}, pool {p['pool']}, {p['num_eval']} evaluation "
              f"points, {p['queries']} labels; methods at budget `{p['budget']}`; "
              f"{p['seconds']:.0f} s."]  # fmt: skip
    return "\n".join(lines) + "\n"


def batch_active(result: dict) -> str:
    """``benchmarks/batch_active.py``: per family and batch rule, NLL and MSE after one batch
    of labels, and the difference to the top-B rule paired over tasks."""
    lines = [
        "| family | rule | NLL ± se | MSE ± se | NLL − top ± se | MSE − top ± se |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        d = ["–", "–"]
        if r["rule"] != "top":
            d = [f"{_f(r[f'{m}_vs_top'], '+.3f')} ± {_f(r[f'{m}_vs_top_se'], '.3f')}"
                 for m in ("nll", "mse")]  # fmt: skip
        lines.append(
            f"| {r['family']} | {r['rule']} | {_f(r['nll'], '.3f')} ± {_f(r['nll_se'], '.3f')} | "
            f"{_f(r['mse'], '.3f')} ± {_f(r['mse_se'], '.3f')} | {d[0]} | {d[1]} |"
        )
    p = result["provenance"]
    lines += ["", f"Commit {p['commit']}; `{p['command']}`; {p['machine']}; {p['date']}; "
              f"{p['num_tasks']} test tasks per family, K = {p['k']}, pool {p['pool']}, one "
              f"batch of {p['batch']} by {p['acquisition']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def amortized_vs_nuts(result: dict) -> str:
    """``benchmarks/amortized_vs_nuts.py``: per model and method, the NLL and the gap to NUTS
    at the method's own θ (paired over tasks), and where each part came from."""
    lines = [
        "| model | method | K | tasks | NLL ± se | gap to NUTS ± se | cov90 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['k']} | {r['n_tasks']} | "
            f"{_f(r['nll'], '.3f')} ± {_f(r['nll_se'], '.3f')} | {_f(r['gap'], '+.3f')} ± "
            f"{_f(r['gap_se'], '.3f')} | {_f(r['cov90'], '.2f')} |"
        )
    parts = result["provenance"].get("parts") or [result["provenance"]]
    made = "; ".join(f"{', '.join(p['models_done'])} at {p['commit']} (`{p['command']}`)"
                     for p in parts)  # fmt: skip
    return "\n".join([*lines, "", f"{made}."]) + "\n"


#: Every generated table, by the name its markers use.
TABLES: dict[str, Table] = {
    "amortized_vs_nuts": Table(("amortized_vs_nuts.json",), amortized_vs_nuts),
    "batch_active": Table(("batch_active.json",), batch_active),
    "student_t_gap": Table(("student_t_gap.json",), student_t_gap),
    "student_t_methods": Table(("student_t_methods.json",), student_t_gap),
    "scaling_groups": Table(("scaling_groups.json",), scaling_groups),
    "active_families": Table(("active_families.json",), active_families),
    "active_hetero": Table(("active_hetero.json",), active_families),
    "generic_path_speed": Table(("generic_path.json",), generic_path_speed),
    "nested_linear_summary": Table(("nested_linear.json",), nested_linear_summary),
    "core_sinusoid": Table(("core_sinusoid_default.json",), core_table),
    "core_sine_line": Table(("core_sine_line_default.json",), core_table),
    "core_sinusoid_neural_process": Table(("core_sinusoid_neural_process.json",), core_table),
    "speed": Table(("speed.json",), speed_table),
    "speed_methods": Table(("speed_methods.json",), speed_methods),
    "speed_sharding": Table(("speed_sharding.json",), speed_sharding),
    "core_sinusoid_bar": Table(
        ("core_sinusoid_default.json",),
        lambda result: core_bar(result, gaps={1: 0.35, 5: 0.40}, cov90=(0.85, 0.95)),
    ),
    "main_job": Table(("run/report.json",), main_job_table),
    "time_to_quality": Table(("time_to_quality.json",), time_to_quality),
    **{
        f"standard_{family}": Table(
            ("calibration.json",),
            lambda rows, family=family: standard_family(rows, family),
        )
        for family in ("circles", "glyphs", "nlschools", "cigar")
    },
    **{
        f"standard_{family}": Table(
            ("calibration.json", "time_to_quality.json"),
            lambda rows, ttq, family=family: standard_family(rows, family, ttq),
        )
        for family in ("sinusoid", "sine_line")
    },
    "standard_best": Table(("calibration.json",), standard_best),
    "ci_timings": Table(("ci_timings.json",), ci_timings),
    "real_data_summary": Table(("real_data.json",), real_data_summary),
    "standard_summary": Table(("calibration.json",), standard_summary),
    "reruns": Table(
        (
            "rerun_sinusoid_maml_seed0.json",
            "rerun_sinusoid_maml_seed0_second_machine.json",
            "rerun_cigar_neural-process_seed2.json",
        ),  # fmt: skip
        reruns,
    ),
    "classification_summary": Table(("classification/calibration.json",), classification_summary),
    "classification_glyphs": Table(
        ("classification/calibration.json",), lambda rows: classification_family(rows, "glyphs")
    ),
    "classification_digits": Table(
        ("classification/calibration.json",), lambda rows: classification_family(rows, "digits")
    ),
    "ensembles_sinusoid": Table(("ensembles_sinusoid.json",), ensembles_table),
    "ensembles_sine_line": Table(("ensembles_sine_line.json",), ensembles_wide),
    "ensembles_bmaml_setting": Table(("ensembles_bmaml_setting.json",), bmaml_setting),
    "ambiguity_sine_line": Table(("ambiguity_sine_line.json",), ambiguity_table),
    "active_sinusoid": Table(("active.json",), active_table),
    "active_pair_circles_active": Table(("active_pair_circles_active.json",), active_table),
    "active_pair_circles": Table(("active_pair_circles.json",), active_table),
}


def render(name: str, results: Path = RESULTS) -> str:
    """The markdown of table ``name`` from the result files under ``results``."""
    if name not in TABLES:
        raise ValueError(f"table: expected one of {sorted(TABLES)}, got {name!r}")
    table = TABLES[name]
    return table.render(*(_load(s, results) for s in table.sources))


def update(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """``text`` with every marked table regenerated, and the names of those that changed."""
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        new = render(m.group(2), results)
        if new != m.group(3):
            changed.append(m.group(2))
        return m.group(1) + new + m.group(4)

    return _BLOCK.sub(sub, text), changed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Regenerate the result tables of the docs.")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    p.add_argument("--root", type=Path, default=ROOT)
    args = p.parse_args(argv)
    stale = []
    if not (args.root / DOCUMENTS[0]).is_file():
        print(
            f"tables: no {DOCUMENTS[0]} under {str(args.root)!r}: run from the repository root "
            "or pass --root",
            file=sys.stderr,
        )
        return 2
    for doc in DOCUMENTS:
        path = args.root / doc
        if not path.is_file():
            continue
        text = path.read_text()
        new, changed = update(text, args.root / "benchmarks" / "results")
        stale += [f"{doc}: {name}" for name in changed]
        if changed and not args.check:
            from bayesmeta.atomic import write_text

            write_text(path, new)
    if stale:
        verb = "stale (run `python benchmarks/tables.py`)" if args.check else "regenerated"
        print(f"tables {verb}: " + "; ".join(stale))
        return 1 if args.check else 0
    print("tables: every generated table matches its results file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
