"""``conformance.html``: the Markdown report's sections plus plots, as one self-contained file.

The same layout as ``conformance.md`` (adapters with their versions once, the grade
legend, scoreboards over every dtype and per dtype, largest errors, edge behaviour), with
grades coloured, and a failures table per adapter that fits a 1400-pixel window: one row
of short cells per failing result (grade, test, rows failed, where, got, should be, ulps,
ratio, bound), and beneath it, across the whole width, what the call took (target,
options, input), the notes and the reproducer, in boxes that wrap and scroll.

Rendered from the same JSON-ready run data as the other writers (so ``xentcheck report`` can
re-render it from ``conformance.json``). The file loads nothing from elsewhere: the CSS is
inline, there are no scripts, and the plots are PNG images embedded as base64 ``data:`` URIs.
Every piece of text that comes from the run (adapter names, specs, versions, notes, inputs,
reproducers) goes through :func:`html.escape`.

Plots (matplotlib is an optional dependency, ``xentcheck[plots]``; it is imported only when
the report is rendered, and when it is missing the report says so in place of the plots):

1. *Error against logit magnitude*, one panel per adapter: each accuracy result (checks
   ``value`` and ``gradient``) is a point at (logit magnitude, ``max_ulp``), coloured by dtype.
   The JSON holds no per-element data, so the magnitude is the largest finite ``|z|`` of the
   result's worst input (``worst.input``, hex floats read with :meth:`float.fromhex`) when the
   result recorded one, else the typical ``|z|`` of its regime (:data:`REGIME_MAGNITUDE`).
   Errors of 0 ulp are drawn at :data:`ZERO_ULP`; errors of 1e10 ulp or more on the top edge
   (infinite ones marked ``x``), magnitudes of 1e40 or more on the right edge.
2. *Histograms of log10(max ulp)* over the accuracy results of each adapter, with the same
   conventions for 0 and infinity, and the profile's budget N drawn as a line.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Callable, Iterable
from html import escape
from pathlib import Path
from typing import Any

from xentcheck.harness.adapters.contract import FUNCTIONS
from xentcheck.harness.report import write_atomic
from xentcheck.harness.report.markdown import (
    ACCURACY_CHECKS,
    ADAPTER_HEAD,
    BEHAVIOUR_LEGEND,
    DIFFERENCE_HEAD,
    FAILURES_PER_ADAPTER_HTML,
    NOT_OFFERED_MARK,
    TIMING_NOTE,
    _ulp,
    adapter_rows,
    behaviour_rows,
    call_text,
    difference_rows,
    failing_results,
    grade_head,
    grade_rows,
    jq_command,
    largest_differs,
    max_ulp_text,
    scoreboard_cells,
)
from xentcheck.harness.text import terminal

FILENAME = "conformance.html"

#: log(max) and max of each dtype, for the regime magnitudes below.
_LOG_MAX = {"float64": 709.78, "float32": 88.72, "float16": 11.09, "bfloat16": 88.72}
_MAX = {"float64": 1.798e308, "float32": 3.403e38, "float16": 65504.0, "bfloat16": 3.39e38}

#: Typical logit magnitude |z| of each regime given the dtype's log(max) ``L`` and max ``M``:
#: the middle (geometric mean where the range spans decades) of what the regime draws
#: (see :mod:`xentcheck.harness.strategies`). ``nonfinite``, ``masked``, ``wide``, ``ties`` and
#: ``single-class`` draw their finite entries like ``moderate``; ``corpus`` is MNIST logits.
#: ``empty`` has no entries and is not plotted.
REGIME_MAGNITUDE: dict[str, Callable[[float, float], float]] = {
    "moderate": lambda L, M: min(10.0, L / 2) / 2,
    "large": lambda L, M: 10.0 * L,
    "overflow-edge": lambda L, M: L,
    "huge": lambda L, M: math.sqrt(100.0 * L) * math.sqrt(M),
    "dominant": lambda L, M: 50.0,
    "ties": lambda L, M: min(10.0, L / 2) / 2,
    "tiny-spread": lambda L, M: math.sqrt(min(1e6, M / 4)),
    "masked": lambda L, M: min(10.0, L / 2) / 2,
    "nonfinite": lambda L, M: min(10.0, L / 2) / 2,
    "wide": lambda L, M: min(10.0, L / 2) / 2,
    "single-class": lambda L, M: min(10.0, L / 2) / 2,
    "corpus": lambda L, M: 10.0,
}

#: Where a 0-ulp error is drawn on the log axes.
ZERO_ULP = 1e-3

#: The error plot's axes end here: larger errors (infinite ones marked x) are drawn on the
#: top edge, larger magnitudes (float64's ``huge`` regime) on the right edge.
_Y_TOP, _X_TOP = 1e10, 1e40

_GRADE_COLOURS = {
    "exact": "#1b7837", "faithful": "#5aae61", "ulp≤N": "#a6dba0", "stable": "#d9f0d3",
    "holds": "#a6dba0", "unstable": "#fdb863", "violated": "#e66101", "broken": "#b2182b",
    "outside contract": "#d9d9d9", "refused": "#bdbdbd",
}
_DTYPE_COLOURS = {"float64": "#1f77b4", "float32": "#2ca02c", "float16": "#ff7f0e",
                  "bfloat16": "#d62728"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #222; }
h1, h2, h3 { font-weight: 600; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.grade { text-align: center; }
td.fail { font-weight: 700; }
.verdict-pass { background: #d9f0d3; }
.verdict-fail { background: #f4a582; }
.verdict-error { background: #b2182b; color: #fff; }
code { font-size: 0.85em; word-break: break-all; }
.muted { color: #666; }
table.failures { width: 100%; table-layout: fixed; }
table.failures td { overflow-wrap: anywhere; }
table.failures col.grade { width: 7em; } table.failures col.test { width: 19em; }
table.failures col.rows { width: 6em; } table.failures col.where { width: 17em; }
table.failures col.num { width: 5.5em; }
table.failures tr.detail td { background: #fafafa; border-top: none; padding-bottom: 0.6em; }
table.failures tr.detail dl { margin: 0; display: grid; grid-template-columns: 7em 1fr;
                              gap: 0.2em 0.6em; align-items: baseline; }
table.failures tr.detail dt { color: #555; }
table.failures tr.detail dd { margin: 0; min-width: 0; }
table.failures tr.detail dd code { display: block; white-space: pre-wrap;
                                   word-break: break-all; max-height: 6.5em; overflow: auto; }
pre.command { white-space: pre-wrap; word-break: break-all; background: #f6f6f6;
              padding: 0.5em; font-size: 0.85em; }
table.grades td:first-child { white-space: nowrap; }
.plot { max-width: 100%; height: auto; border: 1px solid #ddd; }
.legend span { display: inline-block; padding: 0.1em 0.5em; margin: 0 0.2em; }
"""


def _e(value: Any) -> str:
    """Escape anything for HTML text or attribute values."""
    return escape("" if value is None else str(value), quote=True)


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table from pre-escaped cell HTML (``<td ...>`` included) and escaped headers."""
    out = [f'<table class="{cls}">' if cls else "<table>", "<thead><tr>"]
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _td(text: Any, cls: str = "", style: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' style="{style}"' if style else "")
    return f"<td{attrs}>{_e(text)}</td>"


def _runnable(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in data["adapters"] if a["verdict"] != "error"]


def _accuracy(a: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in a["results"] if r["check"] in ACCURACY_CHECKS]


# ---------------------------------------------------------------------------- tables


def adapters(data: dict[str, Any]) -> str:
    """The adapters, once, with their versions and specs (the other tables name them by
    their short name only), verdicts and counts."""
    rows = []
    for (name, version, spec, dialect, verdict, failing, results, seconds, in_calls,
         reason) in adapter_rows(data):
        rows.append([_td(name), _td(version), _td(spec), _td(dialect),
                     _td(verdict, cls=f"verdict-{_e(verdict)}"),
                     _td(failing, cls="num"), _td(results, cls="num"),
                     _td(seconds, cls="num"), _td(in_calls, cls="num"), _td(reason)])
    table = _table(ADAPTER_HEAD, rows, cls="adapters")
    if data.get("timing"):
        table += f"<p>{_e(TIMING_NOTE)}</p>"
    quarantined = [[_td(a["name"]), _td(n["function"]), _td(n["calls"], cls="num"),
                    _td(n["reason"])]
                   for a in data["adapters"] for n in a.get("not_run") or ()]
    if quarantined:
        table += ("<p>Not run (the function or adapter hung or crashed again and again, and "
                  "was not called any more):</p>"
                  + _table(["adapter", "function", "calls", "reason"], quarantined,
                           cls="not-run"))
    left_out = [[_td(s.get("name")), _td(s.get("reason") or "")]
                for s in data.get("skipped") or ()]
    if left_out:
        table += ("<p>Built-ins left out of this run:</p>"
                  + _table(["adapter", "reason"], left_out, cls="skipped"))
    return table


def grades(data: dict[str, Any]) -> str:
    """The grade legend: what each grade means and what it counts as under the profile."""
    settings = data["settings"]
    rows = [[_grade_cell(grade, False), _td(meaning), _td(counts)]
            for grade, meaning, counts in grade_rows(settings)]
    return _table(grade_head(settings), rows, cls="grades")


def differences(data: dict[str, Any]) -> str:
    rows = difference_rows(data)
    if not rows:
        return "<p>Every adapter is graded under PyTorch's convention.</p>"
    return ("<p>Adapters graded under their library's documented contract (dialect): these "
            "differences are not defects; the failures are defects under the library's own "
            "contract.</p>" + _table(DIFFERENCE_HEAD, [[_td(x) for x in row] for row in rows],
                                     cls="differences"))


def _grade_cell(grade: str | None, failed: bool) -> str:
    if grade is None:
        return _td("")
    colour = _GRADE_COLOURS.get(grade, "#fff")
    fg = "#fff" if grade in ("exact", "broken", "violated") else "#000"
    text = f"{grade}{' ✗' if failed else ''}"
    return _td(text, cls="grade fail" if failed else "grade",
               style=f"background:{colour};color:{fg}")


def scoreboard(data: dict[str, Any], dtype: str | None = None) -> str:
    """Adapter × function: the worst accuracy grade over every dtype and regime (or over
    ``dtype``'s), coloured; ✗ marks a failing result, — a function the adapter does not
    provide."""
    rows = []
    for function, cells in scoreboard_cells(data, dtype):
        row = [_td(function)]
        for worst, failed, provided in cells:
            if worst is None:
                row.append(_td("" if provided else "—", cls="grade"))
            else:
                row.append(_grade_cell(worst, failed))
        rows.append(row)
    return _table(["function"] + [a["name"] for a in _runnable(data)], rows,
                  cls="scoreboard")


def scoreboards(data: dict[str, Any]) -> str:
    """The scoreboard over every dtype, then one per dtype of the run."""
    parts = ["<h3>All dtypes</h3>", scoreboard(data)]
    for dtype in data["settings"]["dtypes"]:
        parts += [f"<h3>{_e(dtype)}</h3>", scoreboard(data, dtype)]
    return "\n".join(parts)


def _ulp_cell(results: list[dict[str, Any]]) -> str:
    text = max_ulp_text(results)
    failed = any(not r["passed"] for r in results)
    return _td(text, cls="num fail" if failed else "num",
               style="background:#f4a582" if failed else "")


def max_ulp_tables(data: dict[str, Any]) -> str:
    """Per dtype, the largest error found (ulps) per function and adapter; cells of failing
    results are shaded."""
    adapters = _runnable(data)
    parts = []
    for dtype in data["settings"]["dtypes"]:
        rows = []
        for function in FUNCTIONS:
            rows.append([_td(function)] + [
                _ulp_cell([r for r in _accuracy(a)
                           if r["function"] == function and r["dtype"] == dtype])
                for a in adapters])
        parts.append(f"<h3>{_e(dtype)}</h3>\n" + _table(
            ["function"] + [a["name"] for a in adapters], rows, cls="max-ulp"))
    return "\n".join(parts)


def behaviour(data: dict[str, Any]) -> str:
    """What each adapter does where the reference leaves the answer ungraded; calls never
    made are marked apart from calls that raised."""
    rows = behaviour_rows(data)
    if not rows:
        return "<p>No ungraded situations came up in this run.</p>"
    cells = [[_td(x, cls="muted" if x == NOT_OFFERED_MARK else "") for x in row]
             for row in rows]
    return (_table(["situation", "function"] + [a["name"] for a in _runnable(data)], cells,
                   cls="behaviour") + f'<p class="muted">{_e(BEHAVIOUR_LEGEND)}</p>')


def _input_text(w: dict[str, Any], limit: int = 24) -> str:
    values = [str(v) for v in (w.get("input") or [])]
    text = " ".join(values[:limit])
    return text + (f" … ({len(values) - limit} more)" if len(values) > limit else "")


def _code(text: Any, limit: int = 400) -> str:
    s = "" if text is None else str(text)
    if len(s) > limit:
        s = s[:limit] + "..."
    return f"<td><code>{_e(s)}</code></td>" if s else "<td></td>"


def _detail(label: str, text: Any, code: bool = True, limit: int = 2000) -> str:
    s = "" if text is None else str(text)
    if not s:
        return ""
    if len(s) > limit:
        s = s[:limit] + "..."
    shown = f"<code>{_e(s)}</code>" if code else _e(s)
    return f"<dt>{_e(label)}</dt><dd>{shown}</dd>"


_FAILURE_COLUMNS = [("grade", "grade"), ("test", "test"), ("rows failed", "rows"),
                    ("worst at", "where"), ("got", ""), ("should be", ""), ("ulps", "num"),
                    ("ratio", "num"), ("bound (ulp)", "num")]


def _failure_rows(r: dict[str, Any]) -> list[str]:
    """Two table rows of one failing result: the summary and its worst element's numbers,
    then, across the whole width, what the call took (target, options, input), notes and
    the reproducer."""
    w = r.get("worst") or {}
    where = ""
    if w:
        where = f"case {w.get('case')} row {w.get('row')}" + (
            f" index {w.get('index')}" if w.get("index") is not None else "")
    main = [
        _grade_cell(r["grade"], True),
        _td(f"{r['function']} [{r['dtype']}-{r['regime']}] check {r['check']}"),
        _td(f"{r['failed']} of {r['cases']}", cls="num"),
        _td(where), _code(w.get("got")), _code(w.get("expected")),
        _td(_ulp(w.get("ulp")) if w else "", cls="num"),
        _td(_ulp(w.get("ratio")) if w else "", cls="num"),
        _td(_ulp(w.get("allowed_ulp")) if w else "", cls="num"),
    ]
    target, options = call_text(w) if w else ("", "")
    details = "".join([
        _detail("largest", f"{_ulp(r.get('max_ulp'))} ulp, ratio {_ulp(r.get('max_ratio'))}, "
                           "at other elements than the worst case", code=False)
        if largest_differs(r) else "",
        _detail("target", target), _detail("options", options),
        _detail("input", _input_text(w) if w else ""),
        _detail("notes", "; ".join(str(n) for n in r.get("notes") or []), code=False),
        _detail("reproduce", (w.get("reproducer") if w else None) or r.get("reproducer"),
                limit=1200),
    ])
    rows = ["".join(main)]
    if details:
        rows.append(f'<td colspan="{len(_FAILURE_COLUMNS)}"><dl>{details}</dl></td>')
    return rows


def _failure_table(results: list[dict[str, Any]]) -> str:
    cols = "".join(f'<col class="{c}">' if c else "<col>" for _, c in _FAILURE_COLUMNS)
    out = ['<table class="failures">', f"<colgroup>{cols}</colgroup>", "<thead><tr>"]
    out += [f"<th>{_e(h)}</th>" for h, _ in _FAILURE_COLUMNS]
    out.append("</tr></thead>")
    for r in results:  # one tbody per result: its two rows stay together
        main, *detail = _failure_rows(r)
        out.append(f'<tbody><tr class="result">{main}</tr>'
                   + "".join(f'<tr class="detail">{d}</tr>' for d in detail) + "</tbody>")
    out.append("</table>")
    return "\n".join(out)


def failures(data: dict[str, Any], per_adapter: int = FAILURES_PER_ADAPTER_HTML) -> str:
    """Per adapter, each failing result with its worst element (got, should be, ulps,
    ratio, bound), the target, options and input it was called with and its reproducer,
    worst first, at most ``per_adapter`` per adapter (so that one bad adapter does not
    hide the others), with a ``jq`` line for the rest; adapters that could not be run at
    all with their reason."""
    parts = []
    for index, a in enumerate(data["adapters"]):
        if a["verdict"] == "error":
            parts.append(f"<h3>{_e(a['name'])}</h3>\n<p>Could not be run: "
                         f"{_e(a.get('reason'))}</p>")
            continue
        failing = failing_results(a)
        if not failing:
            continue
        shown = failing[:per_adapter]
        parts.append(f"<h3>{_e(a['name'])}</h3>\n<p>{len(failing)} failing result"
                     f"{'s' if len(failing) != 1 else ''}"
                     + (f", the {len(shown)} worst below.</p>" if len(shown) < len(failing)
                        else ", worst first.</p>"))
        parts.append(_failure_table(shown))
        rest = len(failing) - len(shown)
        if rest:
            parts.append(f'<p class="more">{rest} more failing result'
                         f"{'s' if rest != 1 else ''} of {_e(a['name'])}, none worse than "
                         "those above, are in <code>conformance.json</code>; list every one "
                         f'with:</p>\n<pre class="command">{_e(jq_command(index))}</pre>')
    if not parts:
        return "<p>None: every adapter passed.</p>"
    return (f"<p>Per adapter, worst first (grade, then error), at most {per_adapter} each. "
            "The worst case of a result is its worst grade's largest error.</p>\n"
            + "\n".join(parts))


# ---------------------------------------------------------------------------- plots


def input_magnitude(w: dict[str, Any] | None) -> float | None:
    """The largest finite |z| of a worst input written as hex floats; None without one."""
    best = None
    for item in (w or {}).get("input") or []:
        try:
            v = abs(float.fromhex(str(item)))
        except (ValueError, OverflowError):
            continue
        if math.isfinite(v) and (best is None or v > best):
            best = v
    return best


def regime_magnitude(regime: str, dtype: str) -> float | None:
    """The typical |z| of a regime in a dtype (:data:`REGIME_MAGNITUDE`); None if unknown."""
    fn = REGIME_MAGNITUDE.get(regime)
    if fn is None:
        return None
    return fn(_LOG_MAX.get(dtype, _LOG_MAX["float64"]), _MAX.get(dtype, _MAX["float64"]))


def _points(a: dict[str, Any]) -> list[tuple[str, float, float | None]]:
    """(dtype, |z|, max_ulp or None for infinite) per accuracy result with a max_ulp."""
    out = []
    for r in _accuracy(a):
        u = r.get("max_ulp")
        if u is None or (isinstance(u, str) and u != "inf"):
            continue
        x = input_magnitude(r.get("worst")) or regime_magnitude(r["regime"], r["dtype"])
        if x is None:
            continue
        out.append((r["dtype"], min(max(x, 1e-3), _X_TOP), None if u == "inf" else float(u)))
    return out


def _safe(text: str) -> str:
    """Text for matplotlib labels: control characters shown escaped (they are no glyphs),
    and ``$`` would start mathtext."""
    return terminal(" ".join(text.split())).replace("$", r"\$")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missing glyph is the label's business, not ours
        fig.savefig(buf, format="png", dpi=90)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _decade(value: float, _: Any) -> str:
    """A log-axis tick label: 1, 1e5, 1e-2."""
    if value <= 0:
        return ""
    exponent = round(math.log10(value))
    return "1" if exponent == 0 else f"1e{exponent}"


def _layout(fig: Any, rows: int, wspace: float) -> None:
    """Fixed margins for a grid of panels (tight_layout measures every tick label of
    every panel: seconds per figure)."""
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.8 / height, bottom=0.6 / height,
                        wspace=wspace, hspace=0.45 if rows > 1 else 0.2)


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return max(1, math.ceil(n / cols)), max(1, cols)


def _title(adapter: dict[str, Any], extra: str = "") -> str:
    label = str(adapter["name"])  # the short name, as in every table (versions: Adapters)
    label = label if len(label) <= 40 else label[:39] + "…"
    return _safe(label + extra)


def plot_error_vs_magnitude(data: dict[str, Any]) -> str:
    """Panels of max ulp against logit magnitude (both log axes), one per adapter; a data
    URI. Values beyond :data:`_Y_TOP` and :data:`_X_TOP` are drawn on the edges."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    adapters = _runnable(data)
    budget = data["settings"].get("ulp_budget")
    rows, cols = _grid(len(adapters))
    fig = Figure(figsize=(5.0 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    all_points = [_points(a) for a in adapters]
    top = _Y_TOP
    xs = [x for pts in all_points for _, x, _ in pts] or [1.0]
    for k, ax in enumerate(axes.flat):
        if k >= len(adapters):
            ax.set_visible(False)
            continue
        for dtype in data["settings"]["dtypes"]:
            pts = [(x, u) for d, x, u in all_points[k] if d == dtype]
            fin = [(x, min(max(u, ZERO_ULP), top)) for x, u in pts if u is not None]
            inf = [x for x, u in pts if u is None]
            colour = _DTYPE_COLOURS.get(dtype)
            if fin:
                ax.scatter([p[0] for p in fin], [p[1] for p in fin], s=14, alpha=0.6,
                           color=colour, label=dtype, edgecolors="none")
            if inf:
                ax.scatter(inf, [top] * len(inf), s=30, marker="x", color=colour,
                           label=f"{dtype}: inf" if not fin else None)
        if budget:
            ax.axhline(float(budget), color="#555", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        # minor ticks over 50 decades cost seconds to lay out and add nothing here, and
        # plain "1e5" labels render without mathtext
        ax.minorticks_off()
        ax.xaxis.set_major_formatter(FuncFormatter(_decade))
        ax.yaxis.set_major_formatter(FuncFormatter(_decade))
        ax.set_xlim(min(xs) / 3, _X_TOP * 3)
        ax.set_ylim(ZERO_ULP / 3, top * 3)
        ax.set_title(_title(adapters[k]), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("max error (ulp)")
        if k // cols == rows - 1 or k + cols >= len(adapters):
            ax.set_xlabel("logit magnitude |z|")
            ax.xaxis.set_tick_params(labelbottom=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="center right")
    fig.suptitle(f"Largest error per result against logit magnitude (dashed: N = {budget} ulp; "
                 f"0 ulp drawn at {ZERO_ULP:g}; top edge: 1e10 ulp or more, x: infinite; "
                 "right edge: |z| of 1e40 or more)", fontsize=10)
    _layout(fig, rows, 0.06)
    return _png(fig)


#: Histogram bins: one per decade from 10^-2 to 10^10, one for 0 (and anything below
#: 10^-2) on the left, one for 10^10 and more, infinity included, on the right.
_HIST_LO, _HIST_HI = -2, 10


def plot_histograms(data: dict[str, Any]) -> str:
    """Histograms of log10(max ulp) over the accuracy results, one panel per adapter."""
    from matplotlib.figure import Figure

    adapters = _runnable(data)
    budget = data["settings"].get("ulp_budget")
    rows, cols = _grid(len(adapters))
    fig = Figure(figsize=(5.0 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    edges = [float(e) for e in range(_HIST_LO - 1, _HIST_HI + 2)]
    for k, ax in enumerate(axes.flat):
        if k >= len(adapters):
            ax.set_visible(False)
            continue
        counts = [0] * (len(edges) - 1)
        for r in _accuracy(adapters[k]):
            u = r.get("max_ulp")
            if u == "inf":
                v = math.inf
            elif isinstance(u, (int, float)) and not isinstance(u, bool):
                v = math.log10(u) if u > 0 else -math.inf
            else:
                continue
            i = math.floor(min(max(v, _HIST_LO - 1), _HIST_HI)) - (_HIST_LO - 1)
            counts[min(i, len(counts) - 1)] += 1
        ax.stairs(counts, edges, fill=True, color="#4477aa")
        if budget:
            ax.axvline(math.log10(float(budget)), color="#b2182b", lw=1, ls="--")
        ax.set_title(_title(adapters[k], f" ({sum(counts)} results)"), fontsize=10)
        ticks = [_HIST_LO - 0.5] + list(range(0, _HIST_HI, 2)) + [_HIST_HI + 0.5]
        labels = ["0"] + [f"1e{t}" if t else "1" for t in range(0, _HIST_HI, 2)] + ["≥1e10"]
        ax.set_xticks(ticks, labels, fontsize=8)
        if k % cols == 0:
            ax.set_ylabel("results")
        if k // cols == rows - 1 or k + cols >= len(adapters):
            ax.set_xlabel("largest error (ulp), one bin per decade")
            ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(f"Distribution of the largest error per result (red: N = {budget} ulp; "
                 "leftmost bin: 0 ulp; rightmost: 1e10 ulp or more, infinite included)",
                 fontsize=10)
    _layout(fig, rows, 0.18)
    return _png(fig)


def plots(data: dict[str, Any]) -> str:
    """The plots section: images, or a note saying why there are none."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ('<p class="muted">Plots need matplotlib, which is not installed here '
                '(<code>pip install "xentcheck[plots]"</code>, then '
                "<code>xentcheck report</code> to re-render).</p>")
    if not _runnable(data):
        return '<p class="muted">No adapter could be run: nothing to plot.</p>'
    return "\n".join([
        "<h3>Error against logit magnitude</h3>",
        "<p>Each point is one result (function × dtype × regime, checks value and gradient): "
        "its largest error in ulps against the magnitude of the logits. The magnitude is the "
        "largest finite |z| of the worst input when the result recorded one, else the typical "
        "|z| of its regime (e.g. moderate ≈ 5, overflow-edge ≈ log(max), large ≈ "
        "10·log(max), huge ≈ the geometric middle of 100·log(max) .. max).</p>",
        f'<img class="plot" alt="max ulp against logit magnitude per adapter" '
        f'src="{plot_error_vs_magnitude(data)}">',
        "<h3>Histograms of the largest error</h3>",
        f'<img class="plot" alt="histograms of log10 max ulp per adapter" '
        f'src="{plot_histograms(data)}">',
    ])


# ---------------------------------------------------------------------------- page


def render(data: dict[str, Any]) -> str:
    s = data["settings"]
    p = data["platform"]
    summary = (f"Profile <code>{_e(s['profile'])}</code> (N = {_e(s['ulp_budget'])} ulp), "
               f"seed {_e(s['seed'])}, {_e(data['cases'])} cases, dtypes "
               f"{_e(', '.join(s['dtypes']))}, regimes {_e(', '.join(s['regimes']))}"
               + (f", only the checks {_e(', '.join(s['checks']))}" if s.get("checks") else "")
               + ". "
               f"Python {_e(p.get('python'))}, NumPy {_e(p.get('numpy'))}, mpmath "
               f"{_e(p.get('mpmath'))} on {_e(p.get('machine'))}; "
               f"{_e(data.get('seconds'))} s. Report <code>{_e(data.get('report_id', '-'))}"
               "</code> (every file of the set carries it).")
    body = "\n".join([
        "<h1>xentcheck conformance report</h1>", f"<p>{summary}</p>",
        '<h2 id="adapters">Adapters</h2>',
        "<p>Versions and specs are listed here only; the tables below name each adapter by "
        "its name.</p>", adapters(data),
        '<h2 id="grades">Grades</h2>',
        "<p>Each row checked gets the worst grade of its elements; a result (one check of "
        "one function on one dtype and regime) gets its worst row's. Errors are measured in "
        "ulps of the dtype against the exact value, and as the stability ratio: the error "
        "over the first-order bound of the textbook shifted algorithm on that input.</p>",
        grades(data),
        '<h2 id="scoreboard">Scoreboard</h2>',
        "<p>Worst accuracy grade against the exact truth over every regime "
        "(checks <code>value</code>, <code>gradient</code>, <code>jvp</code> and "
        "<code>hvp</code>), over every dtype and per dtype; ✗ marks a failing result, "
        "— not provided.</p>", scoreboards(data),
        '<h2 id="differences">Documented differences from the PyTorch convention</h2>',
        differences(data),
        '<h2 id="largest-errors">Largest error found, in ulps of the dtype</h2>',
        max_ulp_tables(data),
        '<h2 id="plots">Plots</h2>', plots(data),
        '<h2 id="behaviour">Behaviour where the reference gives no grade</h2>', behaviour(data),
        '<h2 id="failures">Failures</h2>', failures(data),
    ])
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>xentcheck conformance report</title>\n"
            f'<meta name="xentcheck-report-id" content="{_e(data.get("report_id", ""))}">\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def write(data: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / FILENAME
    write_atomic(path, render(data))
    return path
