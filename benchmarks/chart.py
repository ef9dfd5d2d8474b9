"""Bar chart of wsplugin relative to each peer, from build/bench/results.json.

    python chart.py RESULTS_JSON OUT_PNG      (run by run.py in .venv-peers)

One group of bars per figure, one bar per peer. Throughput figures are
wsplugin / peer; latency and memory are peer / wsplugin, so that above 1
always means wsplugin is ahead. Log scale, a line at 1.
"""

import json
import math
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    results = json.load(open(src))
    metrics = [
        ("A", "A echo\n64 B msgs/s", "higher"),
        ("B50", "B round\ntrip p50", "lower"),
        ("B99", "B round\ntrip p99", "lower"),
        ("C", "C echo\n64 KiB MB/s", "higher"),
        ("D", "D broadcast\ndeliveries/s", "higher"),
        ("E", "E memory\nper idle conn", "lower"),
        ("F", "F handshakes/s", "higher"),
        ("G", "G broadcast\ndeflate", "higher"),
    ]
    metrics = [m for m in metrics if m[0][0] in results["workloads"]]
    peers = [s for s in results["servers"] if s["name"] != "wsplugin"]
    fig, ax = plt.subplots(figsize=(11, 5.2), dpi=110)
    n = max(len(peers), 1)
    width = 0.8 / n
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    values = []
    for i, peer in enumerate(peers):
        xs, ys = [], []
        for j, (key, _label, better) in enumerate(metrics):
            r = results["ratios"].get(peer["name"], {}).get(key)
            if not r:
                continue
            ys.append(r if better == "higher" else 1.0 / r)
            xs.append(j - 0.4 + width * (i + 0.5))
        values += ys
        label = peer["label"] + (" (n/a)" if peer["unavailable"] else "")
        bars = ax.bar(xs, ys, width, label=label, color=colors[i % len(colors)])
        for bar, y in zip(bars, ys, strict=True):
            ax.annotate(
                f"{y:.2f}",
                (bar.get_x() + bar.get_width() / 2, y),
                ha="center",
                va="bottom" if y >= 1 else "top",
                fontsize=6.5,
                rotation=90,
                xytext=(0, 2 if y >= 1 else -2),
                textcoords="offset points",
            )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    if values:
        lo = min(min(values), 1.0)
        hi = max(max(values), 1.0)
        ax.set_ylim(10 ** (math.log10(lo) - 0.25), 10 ** (math.log10(hi) + 0.25))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([m[1] for m in metrics], fontsize=8.5)
    ax.set_ylabel("wsplugin relative to peer (> 1: wsplugin ahead)")
    mode = "quick run" if results["quick"] else f"median of {results['runs']} runs"
    ax.set_title(
        f"wsplugin vs peers ({mode}, {results['date']}); latency and memory inverted",
        fontsize=10,
    )
    ax.legend(
        fontsize=8,
        ncol=min(n, 5),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        frameon=False,
    )
    ax.grid(axis="y", which="both", alpha=0.25)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
