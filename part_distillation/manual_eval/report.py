"""The study's figures: per-method precision, diversity and generality with bootstrap 95%
intervals over classes, paired differences between methods, inter-annotator agreement.

Per method and class ``c`` (answers pooled over the class's objects and annotators):

- precision_c = accepted segments / shown segments (panels showing no segment do not count;
  a class whose panels show none has no precision);
- diversity_c = mean answered number of distinct meaningful parts per panel;
- generality_c = 1 when more than half of the "does this split the object into parts?" answers
  are yes, else 0.

A method's figure is the mean over classes; its interval is the percentile bootstrap of that mean
over classes (scipy.stats.bootstrap); a paired difference is the mean over the classes both methods
have of the per-class difference, with its bootstrap interval. Agreement (items with >= 2
annotators): Cohen's kappa averaged over annotator pairs (sklearn; quadratic weights for the part
count) and Fleiss' kappa (statsmodels) on the units rated by the most common number of raters.
"""
import itertools
import json
import math
import os
import warnings
from collections import defaultdict
from typing import Dict, List, Tuple

import numpy as np

from ..utils.io import atomic_save_image, atomic_write, atomic_write_json
from . import store

METRICS = ("precision", "diversity", "generality")


def per_class(rows: List[dict]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{method: {metric: {class_code: value}}}`` from :func:`store.answer_rows` rows."""
    acc = defaultdict(lambda: defaultdict(lambda: [0, 0, [], []]))
    for r in rows:
        a = acc[r["method"]][r["class_code"]]
        a[0] += r["accepted"]
        a[1] += r["shown"]
        a[2].append(r["num_parts"])
        a[3].append(r["splits"])
    out = {}
    for method, classes in acc.items():
        out[method] = {
            "precision": {c: a[0] / a[1] for c, a in classes.items() if a[1] > 0},
            "diversity": {c: float(np.mean(a[2])) for c, a in classes.items()},
            "generality": {c: float(np.mean(a[3]) > 0.5) for c, a in classes.items()}}
    return out


def bootstrap_mean(values, n_resamples: int = 2000, seed: int = 0) -> Tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap 95% interval;
    the interval is NaN with fewer than two values."""
    from scipy.stats import bootstrap

    v = np.asarray(list(values), float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan, math.nan
    if np.all(v == v[0]):
        return float(v[0]), float(v[0]), float(v[0])
    res = bootstrap((v,), np.mean, n_resamples=n_resamples, confidence_level=0.95, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(v.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def _kappas(units: Dict[tuple, Dict[str, int]], weights=None) -> dict:
    """Cohen (mean over annotator pairs) and Fleiss kappa of ``{unit: {annotator: rating}}``."""
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    multi = {u: r for u, r in units.items() if len(r) >= 2}
    out = {"units": len(multi), "cohen": math.nan, "cohen_pairs": 0, "fleiss": math.nan, "fleiss_raters": 0}
    if not multi:
        return out
    names = sorted({a for r in multi.values() for a in r})
    pair_k = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a, b in itertools.combinations(names, 2):
            shared = [u for u, r in multi.items() if a in r and b in r]
            if len(shared) >= 2:
                k = cohen_kappa_score([multi[u][a] for u in shared], [multi[u][b] for u in shared], weights=weights)
                if not math.isnan(k):
                    pair_k.append(k)
        if pair_k:
            out["cohen"], out["cohen_pairs"] = float(np.mean(pair_k)), len(pair_k)
        counts = [len(r) for r in multi.values()]
        k = max(set(counts), key=lambda n: (counts.count(n), n))
        table = [list(r.values()) for r in multi.values() if len(r) == k]
        if len(table) >= 2:
            agg, _ = aggregate_raters(np.asarray(table))
            out["fleiss"], out["fleiss_raters"] = float(fleiss_kappa(agg)), k
    return out


def agreement(rows: List[dict], seg_rows: List[dict]) -> dict:
    """Kappas per question on items with >= 2 annotators: ``{"meaningful", "splits", "num_parts"}``."""
    seg, split, count = defaultdict(dict), defaultdict(dict), defaultdict(dict)
    for r in seg_rows:
        seg[r["segment_id"]][r["annotator"]] = int(r["meaningful"])
    for r in rows:
        split[r["panel_id"]][r["annotator"]] = int(r["splits"])
        count[r["panel_id"]][r["annotator"]] = int(r["num_parts"])
    return {"meaningful": _kappas(seg), "splits": _kappas(split), "num_parts": _kappas(count, weights="quadratic")}


def compute_report(study_dir: str, n_resamples: int = 2000, seed: int = 0) -> dict:
    """All figures of a study (see the module docstring) as a JSON-able dict."""
    conn = store.connect(study_dir)
    try:
        rows, seg_rows = store.answer_rows(conn), store.segment_rows(conn)
        methods = [r["name"] for r in conn.execute("SELECT name FROM methods ORDER BY id")]
        annotators = conn.execute("SELECT COUNT(DISTINCT annotator_id) FROM submissions WHERE undone IS NULL").fetchone()[0]
        items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    finally:
        conn.close()
    pc = per_class(rows)
    answers = defaultdict(int)
    for r in rows:
        answers[r["method"]] += 1
    result = {"methods": {}, "differences": {}, "agreement": agreement(rows, seg_rows),
              "num_answers": len(rows), "num_annotators": int(annotators), "num_items": int(items),
              "n_resamples": n_resamples, "per_class": pc}
    for m in methods:
        d = {"panels_answered": answers[m]}
        for metric in METRICS:
            vals = pc.get(m, {}).get(metric, {})
            mean, lo, hi = bootstrap_mean(vals.values(), n_resamples, seed)
            d[metric] = {"mean": mean, "low": lo, "high": hi, "classes": len(vals)}
        result["methods"][m] = d
    for a, b in itertools.combinations(methods, 2):
        d = {}
        for metric in METRICS:
            va, vb = pc.get(a, {}).get(metric, {}), pc.get(b, {}).get(metric, {})
            shared = sorted(set(va) & set(vb))
            mean, lo, hi = bootstrap_mean([va[c] - vb[c] for c in shared], n_resamples, seed)
            d[metric] = {"mean": mean, "low": lo, "high": hi, "classes": len(shared)}
        result["differences"][f"{a} - {b}"] = d
    return result


def _fmt(d: dict, pct: bool) -> str:
    if math.isnan(d["mean"]):
        return "n/a"
    s = 100.0 if pct else 1.0
    ci = "" if math.isnan(d["low"]) else f" [{s * d['low']:.1f}, {s * d['high']:.1f}]"
    return f"{s * d['mean']:.1f}{ci}"


def _k(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}"


def format_markdown(rep: dict) -> str:
    """The report as markdown: methods table, paired differences, agreement."""
    pct = {"precision": True, "diversity": False, "generality": True}
    lines = [f"# Manual evaluation: {rep['num_items']} items, {rep['num_annotators']} annotators, "
             f"{rep['num_answers']} panel answers", "",
             "Precision and generality in %, diversity in parts per panel; mean over classes with the "
             f"bootstrap 95% interval over classes ({rep['n_resamples']} resamples) in brackets.", "",
             "| method | precision | diversity | generality | classes | panels answered |", "|---|---|---|---|---|---|"]
    for m, d in rep["methods"].items():
        lines.append(f"| {m} | " + " | ".join(_fmt(d[k], pct[k]) for k in METRICS)
                     + f" | {d['diversity']['classes']} | {d['panels_answered']} |")
    lines += ["", "## Paired differences (per class, then averaged)", "",
              "| pair | precision | diversity | generality | shared classes |", "|---|---|---|---|---|"]
    for pair, d in rep["differences"].items():
        lines.append(f"| {pair} | " + " | ".join(_fmt(d[k], pct[k]) for k in METRICS)
                     + f" | {d['diversity']['classes']} |")
    lines += ["", "## Inter-annotator agreement (items with two or more annotators)", "",
              "| question | units | Cohen's kappa (pairs) | Fleiss' kappa (raters per unit) |", "|---|---|---|---|"]
    for q, title in (("meaningful", "segment is a meaningful part"), ("splits", "panel splits the object"),
                     ("num_parts", "number of parts (quadratic-weighted Cohen)")):
        a = rep["agreement"][q]
        lines.append(f"| {title} | {a['units']} | {_k(a['cohen'])} ({a['cohen_pairs']}) | "
                     f"{_k(a['fleiss'])} ({a['fleiss_raters']}) |")
    return "\n".join(lines) + "\n"


def plot(rep: dict):
    """Bar plot (matplotlib figure): one subplot per metric, a bar per method, 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(rep["methods"])
    fig, axes = plt.subplots(1, 3, figsize=(4 + 1.2 * len(methods) * 3, 3.6))
    for ax, metric in zip(axes, METRICS):
        means = np.array([rep["methods"][m][metric]["mean"] for m in methods], float)
        lo = np.array([rep["methods"][m][metric]["low"] for m in methods], float)
        hi = np.array([rep["methods"][m][metric]["high"] for m in methods], float)
        err = np.nan_to_num(np.vstack([means - lo, hi - means]), nan=0.0)
        ax.bar(range(len(methods)), np.nan_to_num(means), yerr=err, capsize=4,
               color=[f"C{i}" for i in range(len(methods))])
        ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right")
        ax.set_title(metric)
        if metric != "diversity":
            ax.set_ylim(0, 1.05)
    fig.tight_layout()
    return fig


def write_report(study_dir: str, n_resamples: int = 2000, seed: int = 0) -> Dict[str, str]:
    """Write ``report.json``, ``report.md`` and ``report.png`` into the study folder; returns
    ``{"json", "md", "png"}`` paths."""
    rep = compute_report(study_dir, n_resamples, seed)
    paths = {k: os.path.join(study_dir, f"report.{k}") for k in ("json", "md", "png")}
    atomic_write_json(paths["json"], json.loads(json.dumps(rep, default=float).replace("NaN", "null")), indent=1)
    text = format_markdown(rep)
    atomic_write(paths["md"], lambda f: f.write(text))
    fig = plot(rep)
    fig.canvas.draw()
    from PIL import Image

    atomic_save_image(paths["png"], Image.frombuffer("RGBA", fig.canvas.get_width_height(),
                                                     fig.canvas.buffer_rgba()).convert("RGB"))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths
