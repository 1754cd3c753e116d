"""Reports from a run's result dict: the console table, Markdown, CSV and JSON."""
import csv
import io
import json

from .cases import FAMILIES
from .machine import cache_level_for

CSV_FIELDS = ("device", "threads", "dtype", "size", "family", "activation", "direction", "provider",
              "provider_version", "elements", "bytes", "median_s", "p20_s", "p80_s", "gelem_s",
              "gb_s", "roofline_gb_s", "roofline_fraction", "relu_ratio", "out_preallocated",
              "buffer_sets", "inner_loops", "error")


def size_label(n):
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def bytes_label(b):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b} B"


def table_sizes(report, choice="auto"):
    """The sizes the tables show: all, a list, or (auto) up to three sizes as they are, else the
    largest that fits in L2 (in cache) and the largest (in memory)."""
    sizes = sorted(set(report["config"]["sizes"]))
    if choice not in ("all", "auto"):  # a list (checked against the run's sizes by the CLI)
        return [n for n in sizes if n in choice]
    if choice == "all" or len(sizes) <= 3:
        return sizes
    itemsize = {"float16": 2, "float32": 4, "float64": 8}[report["config"]["dtypes"][0]]
    l2 = report["machine"]["caches"].get("L2")
    cached = [n for n in sizes if l2 and 2 * 3 * n * itemsize <= l2]
    return ([cached[-1]] if cached else []) + [sizes[-1]]


def _groups(report, sizes):
    keys = []
    for r in report["results"]:
        key = (r["device"], r["threads"], r["dtype"], r["size"])
        if r["size"] in sizes and key not in keys:
            keys.append(key)
    return keys


def _roofline(report, key):
    return next(g for g in report["rooflines"]
                if (g["device"], g["threads"], g["dtype"], g["size"]) == key)


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def _rows(report, key):
    """(header, rows) for one group: the primary provider's numbers, then each other provider's
    GB/s, % of roofline, and how many times faster the primary is."""
    results = [r for r in report["results"]
               if (r["device"], r["threads"], r["dtype"], r["size"]) == key]
    providers = []
    for name in report["config"]["providers"]:
        if any(r["provider"] == name for r in results) and name not in providers:
            providers.append(name)
    providers += [r["provider"] for r in results if r["provider"] not in providers]
    if not providers:
        return None, []
    primary, others = providers[0], providers[1:]
    label = {name: report["providers"][name]["label"] for name in providers}
    header = ["family", "activation", "dir", "Gelem/s", "GB/s", "% roof", "p20-p80", "x ReLU"] + [
        label[o] for o in others]
    index = {(r["provider"], r["activation"], r["direction"]): r for r in results}
    order = []
    for family in FAMILIES:
        for r in results:
            if r["family"] == family and (r["activation"], r["direction"]) not in order:
                order.append((r["activation"], r["direction"]))
    rows = []
    for activation, direction in order:
        mine = index.get((primary, activation, direction))
        some = mine or next(index[(o, activation, direction)] for o in others
                            if (o, activation, direction) in index)
        row = [some["family"], activation, {"forward": "fwd", "backward": "bwd"}[direction]]
        if mine and mine["median_s"]:
            spread = (mine["p80_s"] - mine["p20_s"]) / mine["median_s"]
            row += [_fmt(mine["gelem_s"], ".3f"), _fmt(mine["gb_s"], ".2f"),
                    _fmt(mine["roofline_fraction"] and 100 * mine["roofline_fraction"], ".0f"),
                    f"±{50 * spread:.0f}%", _fmt(mine["relu_ratio"], ".2f")]
        else:
            row += ["-", "-", "-", "-", "error" if mine and mine["error"] else "-"]
        for o in others:
            theirs = index.get((o, activation, direction))
            if theirs is None or not theirs["median_s"]:
                row.append("skipped" if theirs is None else "error")
                continue
            cell = f"{theirs['gb_s']:.2f} ({100 * (theirs['roofline_fraction'] or 0):.0f}%)"
            if mine and mine["median_s"]:
                cell += f" {theirs['median_s'] / mine['median_s']:.2f}x"
            row.append(cell)
        rows.append(row)
    return header, rows


def _group_title(report, key):
    device, threads, dtype, n = key
    roof = _roofline(report, key)
    itemsize = {"float16": 2, "float32": 4, "float64": 8}[dtype]
    level, capacity = cache_level_for(3 * n * itemsize, report["machine"]["caches"])
    where = (f"fits in {level} of {bytes_label(capacity)}" if level and device == "cpu"
             else "device memory" if device != "cpu" else "memory")
    who = f"{threads} thread{'s' if threads > 1 else ''}" if device == "cpu" else "GPU"
    return (f"{device}, {who}, {dtype}, N = {size_label(n)} "
            f"({bytes_label(n * itemsize)} per array, {where}); roofline: copy "
            f"{_fmt(roof['forward_gb_s'], '.1f')} GB/s, 2-in-1-out {_fmt(roof['backward_gb_s'], '.1f')} GB/s")


def _skipped_lines(report):
    providers = [s for s in report["skipped"] if "activation" not in s]
    rows = [s for s in report["skipped"] if "activation" in s]
    lines = [f"skipped {s['provider']}: {s['reason']}" for s in providers]
    rows += [{**r, "reason": "failed: " + r["error"]} for r in report["results"] if r["error"]]
    seen = {}
    for s in rows:
        seen.setdefault((s["provider"], s["reason"]), []).append(f"{s['activation']} {s['direction']}")
    for (provider, reason), what in seen.items():
        names = sorted(set(what), key=what.index)
        lines.append(f"skipped {provider} for {', '.join(names[:6])}"
                     f"{' ...' if len(names) > 6 else ''}: {reason}")
    return lines


def legend(report):
    primary = report["config"].get("primary")
    return (f"GB/s counts the bytes a call must move (forward 2N, backward 3N x itemsize; see "
            f"fastact/bench/NOTES.md); % roof: of the copy (forward) or 2-in-1-out copy (backward) "
            f"measured in the same run (its fast end: bytes / p20 time); p20-p80: half the spread around the median; x ReLU: time "
            f"relative to the same provider's ReLU; other providers' cells: GB/s (% of roofline) and "
            f"{primary}'s speed-up over them (their time / {primary}'s time).")


def text(report, sizes="auto"):
    out = [f"fastact-bench: {report['machine']['cpu']}, {report['machine']['cores']} cores"
           + (f", GPU {report['machine']['gpu']}" if report["machine"].get("gpu") else "")
           + f"; {', '.join(p['label'] for p in report['providers'].values())}"]
    for key in _groups(report, table_sizes(report, sizes)):
        header, rows = _rows(report, key)
        if header is None:
            continue
        out += ["", _group_title(report, key)]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        family = None
        for row in rows:
            shown = [("" if row[0] == family else row[0])] + row[1:]
            family = row[0]
            out.append("  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(shown, widths))).rstrip())
    out += [""] + _skipped_lines(report) + [legend(report)]
    return "\n".join(out)


def markdown(report, sizes="all"):
    m = report["machine"]
    v = report["versions"]
    out = ["# fastact-bench report", "",
           f"- machine: {m['cpu']}, {m['cores']} cores"
           + (f", GPU {m['gpu']}" if m.get("gpu") else "")
           + (f", caches {', '.join(f'{k} {bytes_label(s)}' for k, s in m['caches'].items())}"
              if m.get("caches") else ""),
           f"- versions: {', '.join(f'{k} {x}' for k, x in v.items())}",
           f"- {report['config']['repeats']} samples per item (median; p20/p80), interleaved; "
           f"{report['elapsed_s']} s in all; 1-minute load average before/after: "
           f"{m.get('load_average_before_after')}", ""]
    for key in _groups(report, table_sizes(report, sizes)):
        header, rows = _rows(report, key)
        if header is None:
            continue
        out += [f"### {_group_title(report, key)}", "",
                "| " + " | ".join(header) + " |", "|" + "|".join(
                    ":--" if i < 3 else "--:" for i in range(len(header))) + "|"]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        out.append("")
    skipped = _skipped_lines(report)
    if skipped:
        out += ["Skipped:", ""] + [f"- {line}" for line in skipped] + [""]
    out.append(legend(report))
    return "\n".join(out) + "\n"


def to_csv(report):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for r in report["results"]:
        writer.writerow(r)
    return buffer.getvalue()


def to_json(report):
    return json.dumps(report, indent=1)
