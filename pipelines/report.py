"""Pictures and the HTML page of `seqssm evaluate`: plot functions return PNG bytes, the page embeds them.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot, so no global figure state and no
display backend), rendered to bytes once, then both written to disk and embedded in the page as base64.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

_DPI = 130
_NAME_CHARS = 18


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"


def _png(fig: Figure, tight: bool = False) -> bytes:
    """PNG bytes; ``tight`` crops to the drawn content (a second draw) for legends outside the axes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white", bbox_inches="tight" if tight else None)
    return buf.getvalue()


def _colors(k: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def _heatmap(fig: Figure, counts: np.ndarray, totals: np.ndarray, rows: Sequence[str], cols: Sequence[str], *,
             xlabel: str, ylabel: str, title: str, colorbar: str) -> None:
    """Counts written in each cell, colour = count / totals (a true class's share, so rare classes show)."""
    ax = fig.add_subplot()
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    n_rows, n_cols = counts.shape
    small = max(n_rows, n_cols) > 10
    for i in range(n_rows):
        for j in range(n_cols):
            text = f"{counts[i, j]:,}"
            if not small and totals[i, j] > 0:
                text += f"\n{share[i, j]:.0%}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7 if small else 9,
                    color="white" if share[i, j] > 0.55 else "#1b1b1b")
    rotate = n_cols * max(len(_short(c)) for c in cols) > 36
    ax.set_xticks(range(n_cols), [_short(c) for c in cols], rotation=40 if rotate else 0,
                  ha="right" if rotate else "center", rotation_mode="anchor")
    ax.set_yticks(range(n_rows), [_short(r) for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(colorbar)
    bar.outline.set_visible(False)


def confusion_png(matrix: np.ndarray, classes: Sequence[str], *, accuracy: float, title: str) -> bytes:
    """Confusion matrix [K, K] (rows true, columns predicted) as a heatmap with counts and row shares."""
    k = len(classes)
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(max(4.8, 0.62 * k + 2.6), max(4.0, 0.55 * k + 1.9)), layout="constrained")
    totals = np.broadcast_to(matrix.sum(axis=1, keepdims=True), matrix.shape)
    _heatmap(fig, matrix, totals, classes, classes, xlabel="predicted", ylabel="true",
             title=f"{title}\naccuracy {accuracy:.3f}  ·  n = {int(np.sum(matrix)):,}",
             colorbar="share of the true class")
    return _png(fig)


def multilabel_confusion_png(matrices: np.ndarray, classes: Sequence[str], *, subset_accuracy: float,
                             title: str) -> bytes:
    """Per-label 2×2 confusion matrices [K, 2, 2] (sklearn layout) as one row per label: TN, FP, FN, TP.

    TN and FP are coloured as shares of the label's negative rows, FN and TP of its positive rows, so the
    colour of TN is the specificity and that of TP the recall.
    """
    matrices = np.asarray(matrices)
    counts = matrices.reshape(len(classes), 4)
    totals = np.repeat(matrices.sum(axis=2), 2, axis=1)
    fig = Figure(figsize=(6.4, max(2.6, 0.42 * len(classes) + 1.6)), layout="constrained")
    _heatmap(fig, counts, totals, classes, ["true neg", "false pos", "false neg", "true pos"],
             xlabel="outcome", ylabel="label",
             title=f"{title}\nsubset accuracy {subset_accuracy:.3f}  ·  n = {int(counts[0].sum()):,}",
             colorbar="share of the negatives / positives")
    return _png(fig)


def roc_pr_png(y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str], *, auroc: Mapping[str, float],
               auprc: Mapping[str, float], title: str) -> bytes:
    """ROC and precision–recall curves, one per class in ``auroc`` (the classes whose curves are defined).

    y_true: [N, K] 0/1 indicator, one column per class; scores: [N, K] probabilities.
    """
    shown = [k for k, c in enumerate(classes) if c in auroc]
    colors = _colors(len(classes))
    ncol = 2 if len(shown) <= 8 else 3
    fig = Figure(figsize=(11.0, 4.8))
    roc_ax, pr_ax = fig.subplots(1, 2)
    for k in shown:
        name = classes[k]
        fpr, tpr, _ = roc_curve(y_true[:, k], scores[:, k])
        precision, recall, _ = precision_recall_curve(y_true[:, k], scores[:, k])
        label = f"positive class {_short(name)}" if len(shown) == 1 else _short(name)
        roc_ax.plot(fpr, tpr, color=colors[k], lw=1.8, label=f"{label}  (AUC {auroc[name]:.3f})")
        pr_ax.step(recall, precision, where="post", color=colors[k], lw=1.8,
                   label=f"{label}  (AP {auprc[name]:.3f})")
    roc_ax.plot([0, 1], [0, 1], ls="--", lw=1, color="#9a9a9a", label="chance")
    if len(shown) == 1:
        prevalence = float(y_true[:, shown[0]].mean())
        pr_ax.axhline(prevalence, ls="--", lw=1, color="#9a9a9a", label=f"chance ({prevalence:.2f})")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision–recall")
    for ax, where in ((roc_ax, "lower right"), (pr_ax, "lower left")):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.02)
        ax.set_aspect("equal")
        ax.grid(alpha=0.25)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if len(shown) == 1:
            ax.legend(loc=where, fontsize=8, frameon=False)
        else:
            # Below the panel: inside, many classes would hide the low-precision curves.
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol,
                      fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _png(fig, tight=True)


def history_png(x_name: str, x: np.ndarray, series: Mapping[str, np.ndarray], *, title: str) -> bytes:
    """Training history: a loss panel (columns ending in ``loss``) and, if any, a panel of the other metrics.

    ``series`` maps a column name to values aligned with ``x`` [R]; NaN marks a row without that value.
    """
    losses = {k: v for k, v in series.items() if k.endswith("loss")}
    others = {k: v for k, v in series.items() if k not in losses}
    panels = [(p, label) for p, label in ((losses, "loss"), (others, "metric")) if p]
    fig = Figure(figsize=(5.4 * len(panels), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (panel, ylabel) in zip(axes, panels, strict=True):
        for color, (name, values) in zip(_colors(len(panel)), panel.items(), strict=True):
            keep = ~np.isnan(values)
            ax.plot(x[keep], values[keep], color=color, lw=1.8, label=name,
                    marker="o" if keep.sum() <= 30 else None, ms=3.5)
        ax.set(xlabel=x_name, ylabel=ylabel)
        ax.grid(alpha=0.25)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


_CSS = """
body{margin:0;background:#f5f6f8;color:#1d2330;
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1080px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}
.sub{color:#5b6475;margin:0 0 22px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px;margin-bottom:22px}
.card{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 3px rgba(20,30,50,.08)}
.card .v{font-size:26px;font-weight:650;font-variant-numeric:tabular-nums}
.card .k{color:#5b6475;font-size:13px}
section{background:#fff;border-radius:10px;padding:18px 20px;margin-bottom:18px;
box-shadow:0 1px 3px rgba(20,30,50,.08)}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid #e7e9ee;text-align:right}
th:first-child,td:first-child{text-align:left}
th{font-size:13px;color:#5b6475;font-weight:600}
td.d{color:#5b6475;text-align:left;font-size:13px}
tr.avg td{font-style:italic;color:#3d4554}
.bar{display:inline-block;height:8px;border-radius:4px;background:#3b7dd8;vertical-align:middle;margin-right:8px}
img{max-width:100%;height:auto;display:block;margin:0 auto}
.notes li{color:#7a4b00}
footer{color:#8a91a0;font-size:12px;text-align:center;margin-top:26px}
"""

_EXPLAIN = {
    "accuracy": "share of rows predicted exactly right",
    "balanced_accuracy": "mean recall over classes; 1/K for a constant guess",
    "macro_f1": "unweighted mean of per-class F1",
    "micro_f1": "F1 over all (row, label) decisions pooled",
    "mcc": "Matthews correlation; 0 for chance, 1 for perfect",
    "auroc": "area under the ROC curve of the positive class",
    "auprc": "average precision of the positive class",
    "macro_auroc": "mean one-vs-rest area under the ROC curve",
    "macro_auprc": "mean one-vs-rest average precision",
    "subset_accuracy": "share of rows whose whole label set is right",
    "hamming_loss": "share of (row, label) decisions that are wrong",
}

_NAMES = {"mcc": "MCC", "auroc": "AUROC", "auprc": "AUPRC", "macro_auroc": "macro AUROC",
          "macro_auprc": "macro AUPRC", "macro_f1": "macro F1", "micro_f1": "micro F1"}


def _name(key: str) -> str:
    return _NAMES.get(key, key.replace("_", " "))


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:.4f}"


def _per_class_table(report: Mapping) -> str:
    extra = [c for c in ("auroc", "auprc") if any(c in row for row in report["per_class"].values())]
    head = "".join(f"<th>{h}</th>" for h in ["class", "precision", "recall", "F1", "support",
                                             *(_name(c) for c in extra)])
    rows = []
    for name, row in report["per_class"].items():
        bar = f'<span class="bar" style="width:{60 * row["f1-score"]:.0f}px"></span>'
        cells = [row["precision"], row["recall"], row["f1-score"], int(row["support"]),
                 *(row.get(c) for c in extra)]
        tds = "".join(f"<td>{bar if i == 2 else ''}{_fmt(v)}</td>" for i, v in enumerate(cells))
        rows.append(f"<tr><td>{html.escape(name)}</td>{tds}</tr>")
    for name, row in report["averages"].items():
        cells = [row["precision"], row["recall"], row["f1-score"], int(row["support"])] + [None] * len(extra)
        tds = "".join(f"<td>{_fmt(v)}</td>" for v in cells)
        rows.append(f'<tr class="avg"><td>{html.escape(name)}</td>{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(report: Mapping, images: Mapping[str, bytes], *, generated: str, version: str) -> str:
    """A self-contained page: title, headline cards, metrics table, per-class table, embedded pictures.

    ``report`` is the dict `evaluate` writes to metrics.json; ``images`` maps a section heading to PNG bytes.
    """
    esc = html.escape
    metrics = report["metrics"]
    task = {"binary": f"binary (positive class {report.get('positive_label')!s})",
            "multiclass": f"{len(report['classes'])} classes", "multilabel":
            f"multi-label, {len(report['classes'])} labels"}[report["task"]]
    cards = "".join(f'<div class="card"><div class="v">{"—" if v is None else f"{v:.3f}"}</div>'
                    f'<div class="k">{esc(_name(k))}</div></div>' for k, v in metrics.items())
    compared = (report.get("baseline") or {}).get("metrics")
    if compared is not None:  # `evaluate --baseline`: its score beside each of the model's
        rows = "".join(f"<tr><td>{esc(_name(k))}</td><td>{_fmt(v)}</td><td>{_fmt(compared.get(k))}</td>"
                       f"<td class='d'>{esc(_EXPLAIN.get(k, ''))}</td></tr>" for k, v in metrics.items())
        head = ("<th>metric</th><th>value</th><th>baseline</th><th></th>")
    else:
        rows = "".join(f"<tr><td>{esc(_name(k))}</td><td>{_fmt(v)}</td>"
                       f"<td class='d'>{esc(_EXPLAIN.get(k, ''))}</td></tr>" for k, v in metrics.items())
        head = "<th>metric</th><th>value</th><th></th>"
    baseline = report.get("majority_baseline")
    if baseline:
        task += f" · always predicting {baseline['label']!r} scores accuracy {baseline['accuracy']:.3f}"
    parts = [
        f"<header><h1>{esc(report['title'])}</h1><p class='sub'>{report['n']:,} predictions · {esc(task)} · "
        f"from <code>{esc(report['predictions'])}</code></p></header>",
        f'<div class="cards">{cards}</div>',
        f"<section><h2>Metrics</h2><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table></section>",
        f"<section><h2>Per class</h2>{_per_class_table(report)}</section>",
    ]
    for heading, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<section><h2>{esc(heading)}</h2><img src="data:image/png;base64,{data}" '
                     f'alt="{esc(heading)}"></section>')
    if report.get("notes"):
        items = "".join(f"<li>{esc(n)}</li>" for n in report["notes"])
        parts.append(f'<section class="notes"><h2>Notes</h2><ul>{items}</ul></section>')
    parts.append(f"<footer>seqssm {esc(version)} · {esc(generated)} · all numbers also in metrics.json"
                 "</footer>")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(report['title'])}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")
