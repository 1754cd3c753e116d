"""PNG plots of a run (matplotlib, imported here only): per (device, dtype, threads)

    throughput-*.png   GB/s vs array size, one panel per family and direction, roofline drawn
    families-*.png     exp vs piecewise-linear: % of roofline per activation at the largest size
    directions-*.png   forward vs backward GB/s per activation at the largest size
    peers-*.png        every provider's % of roofline per activation at the largest size
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter  # noqa: E402

from .cases import FAMILIES  # noqa: E402
from .report import bytes_label, size_label  # noqa: E402

FAMILY_COLOR = {"exponential": "#d95f02", "piecewise-linear": "#1b9e77"}
DIRECTIONS = ("forward", "backward")


def _primary(report, rows):
    """The provider the plots of these rows are about: the first asked for that has results."""
    return next((p for p in report["config"]["providers"] if any(r["provider"] == p for r in rows)),
                None)


def _order(rows):
    order = []
    for family in FAMILIES:
        for r in rows:
            if r["family"] == family and r["activation"] not in order:
                order.append(r["activation"])
    return order


def _log2_axis(ax, sizes):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: size_label(int(round(v)))))
    ax.xaxis.set_minor_locator(FixedLocator([]))


def throughput(report, rows, roofs, title, path):
    primary = _primary(report, rows)
    sizes = sorted({r["size"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharex=True, sharey=True)
    cmap = plt.get_cmap("tab20")
    for i, family in enumerate(FAMILIES):
        names = _order([r for r in rows if r["family"] == family])
        for j, direction in enumerate(DIRECTIONS):
            ax = axes[i][j]
            roof = sorted((g["size"], g[direction + "_gb_s"]) for g in roofs
                          if g[direction + "_gb_s"])
            if roof:
                ax.plot(*zip(*roof), color="black", lw=3, ls="--", label="roofline: " + (
                    "copy" if direction == "forward" else "2-in-1-out copy"))
            for k, name in enumerate(names):
                pts = sorted((r["size"], r["gb_s"]) for r in rows if r["activation"] == name
                             and r["direction"] == direction and r["provider"] == primary
                             and r["gb_s"])
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, lw=1.4, color=cmap(k % 20), label=name)
            _log2_axis(ax, sizes)
            ax.set_yscale("log")
            ax.set_title(f"{family}, {direction}")
            ax.grid(True, alpha=0.3)
            if i == 1:
                ax.set_xlabel("elements per array (log scale)")
            if j == 0:
                ax.set_ylabel("GB/s (bytes moved / time, log scale)")
            ax.grid(True, which="minor", axis="y", alpha=0.1)
            ax.legend(fontsize=8, ncol=3, loc="lower right")
    fig.suptitle(f"{primary}: throughput vs size ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _largest(rows):
    n = max(r["size"] for r in rows)
    return n, [r for r in rows if r["size"] == n]


def families(report, rows, title, path):
    primary = _primary(report, rows)
    n, rows = _largest([r for r in rows if r["provider"] == primary])
    names = _order(rows)
    fig, axes = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    for ax, direction in zip(axes, DIRECTIONS):
        by = {r["activation"]: r for r in rows if r["direction"] == direction}
        values = [100 * (by[a]["roofline_fraction"] or 0) if a in by else 0 for a in names]
        colors = [FAMILY_COLOR[by[a]["family"]] if a in by else "grey" for a in names]
        ax.bar(range(len(names)), values, color=colors)
        ax.axhline(100, color="black", ls="--", lw=1.5)
        ax.set_ylabel(f"{direction}: % of roofline")
        ax.set_title(f"{direction} ({'copy' if direction == 'forward' else '2-in-1-out copy'} = 100%)")
        ax.grid(True, axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes[1].set_xlabel("activation")
    for ax in axes:  # headroom above the roofline for the legend
        ax.set_ylim(0, max(130, ax.get_ylim()[1] * 1.2))
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in FAMILY_COLOR.values()]
    axes[0].legend(handles + [plt.Line2D([], [], color="black", ls="--")],
                   list(FAMILY_COLOR) + ["roofline"], loc="upper center", ncol=3)
    fig.suptitle(f"{primary}: exponential vs piecewise-linear at N = {size_label(n)} ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def directions(report, rows, roofs, title, path):
    primary = _primary(report, rows)
    n, rows = _largest([r for r in rows if r["provider"] == primary])
    names = _order(rows)
    roof = next(g for g in roofs if g["size"] == n)
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.4
    for k, (direction, color) in enumerate(zip(DIRECTIONS, ("#7570b3", "#e7298a"))):
        by = {r["activation"]: r for r in rows if r["direction"] == direction}
        ax.bar([i + (k - 0.5) * width for i in range(len(names))],
               [by[a]["gb_s"] if a in by and by[a]["gb_s"] else 0 for a in names], width,
               color=color, label=direction)
        if roof[direction + "_gb_s"]:
            ax.axhline(roof[direction + "_gb_s"], color=color, ls="--", lw=1.5,
                       label=f"{direction} roofline ({roof[direction + '_gb_s']:.1f} GB/s)")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_xlabel("activation")
    ax.set_ylabel("GB/s (bytes moved / time)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper right")
    ax.set_title(f"{primary}: forward vs backward at N = {size_label(n)} ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def peers(report, rows, title, path):
    providers = [p for p in report["config"]["providers"] if any(r["provider"] == p for r in rows)]
    n, rows = _largest(rows)
    names = _order(rows)
    fig, axes = plt.subplots(2, 1, figsize=(13, 8), sharex=True)
    width = 0.8 / max(1, len(providers))
    cmap = plt.get_cmap("Set1")
    for ax, direction in zip(axes, DIRECTIONS):
        for k, p in enumerate(providers):
            by = {r["activation"]: r for r in rows if r["direction"] == direction and r["provider"] == p}
            ax.bar([i + (k - (len(providers) - 1) / 2) * width for i in range(len(names))],
                   [100 * (by[a]["roofline_fraction"] or 0) if a in by else 0 for a in names],
                   width, color=cmap(k % 9), label=report["providers"][p]["label"])
        ax.axhline(100, color="black", ls="--", lw=1.5)
        ax.set_ylabel(f"{direction}: % of roofline")
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(0, max(110, ax.get_ylim()[1]))
    axes[0].legend(fontsize=9, ncol=len(providers), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    axes[1].set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes[1].set_xlabel("activation")
    fig.suptitle(f"providers at N = {size_label(n)} ({title}); roofline = 100%", y=0.99)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_all(report, directory):
    """Write every plot for every (device, dtype, threads) group; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    keys = []
    for r in report["results"]:
        key = (r["device"], r["dtype"], r["threads"])
        if key not in keys:
            keys.append(key)
    for device, dtype, threads in keys:
        rows = [r for r in report["results"] if (r["device"], r["dtype"], r["threads"]) == (
            device, dtype, threads) and r["median_s"]]
        roofs = [g for g in report["rooflines"] if (g["device"], g["dtype"], g["threads"]) == (
            device, dtype, threads)]
        if not rows:
            continue
        itemsize = {"float16": 2, "float32": 4, "float64": 8}[dtype]
        largest = max(r["size"] for r in rows)
        who = f"{threads} thread{'s' if threads > 1 else ''}" if device == "cpu" else "GPU"
        title = (f"{device}, {dtype}, {who}; largest "
                 f"{bytes_label(largest * itemsize)} per array")
        stem = f"{device}-{dtype}" + (f"-{threads}t" if device == "cpu" else "")
        for name, draw in (("throughput", lambda p: throughput(report, rows, roofs, title, p)),
                           ("families", lambda p: families(report, rows, title, p)),
                           ("directions", lambda p: directions(report, rows, roofs, title, p)),
                           ("peers", lambda p: peers(report, rows, title, p))):
            if name == "peers" and len({r["provider"] for r in rows}) < 2:
                continue
            path = os.path.join(directory, f"{name}-{stem}.png")
            draw(path)
            paths.append(path)
    return paths
