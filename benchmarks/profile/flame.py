"""Render collapsed stacks (``frame;frame;frame weight`` lines) as an SVG
flame graph: one box per frame, as wide as the weight under it, roots at
the bottom. Standard library only.

    python benchmarks/profile/flame.py STACKS.txt OUT.svg --title T [--unit U]

py-spy writes this input with ``--format raw``; ``memory.py`` writes it from
tracemalloc with bytes as the weight.
"""

from __future__ import annotations

import argparse
import html
import zlib
from pathlib import Path

WIDTH = 1200
ROW = 17
FONT = 11


def parse(path: Path) -> dict:
    """A tree of nested dicts: {frame: [weight, children]}."""
    root: dict = {}
    for line in path.read_text().splitlines():
        stack, _, weight = line.rstrip().rpartition(" ")
        if not stack or not weight.isdigit():
            continue
        node, w = root, int(weight)
        for frame in stack.split(";"):
            entry = node.setdefault(frame, [0, {}])
            entry[0] += w
            node = entry[1]
    return root


def color(name: str) -> str:
    h = zlib.crc32(name.split(" (")[0].encode())
    if "wsplugin/" in name:
        return f"rgb({40 + h % 40},{140 + h % 60},{200 + h % 50})"  # blue: ours
    if "autobahn/" in name:
        return f"rgb({220 + h % 30},{150 + h % 60},{40 + h % 40})"  # orange
    if "twisted/" in name:
        return f"rgb({120 + h % 50},{190 + h % 50},{90 + h % 40})"  # green
    return f"rgb({200 + h % 50},{90 + h % 60},{70 + h % 40})"  # red: the rest


def render(root: dict, title: str, unit: str) -> str:
    total = sum(w for w, _ in root.values()) or 1
    depth = 0

    def measure(node: dict, d: int) -> None:
        nonlocal depth
        depth = max(depth, d)
        for _, children in node.values():
            measure(children, d + 1)

    measure(root, 1)
    height = (depth + 3) * ROW
    scale = WIDTH / total
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" font-family="monospace" font-size="{FONT}">',
        '<rect width="100%" height="100%" fill="#fbfbf5"/>',
        f'<text x="6" y="{ROW - 4}" font-size="{FONT + 2}">'
        f"{html.escape(title)} (total {total:,} {unit}; hover for details)</text>",
    ]

    def draw(node: dict, x: float, d: int) -> None:
        for name, (w, children) in sorted(node.items(), key=lambda kv: -kv[1][0]):
            width = w * scale
            if width >= 0.5:
                y = height - (d + 1) * ROW
                label = f"{name} — {w:,} {unit} ({100 * w / total:.1f}%)"
                out.append(
                    f'<g><title>{html.escape(label)}</title><rect x="{x:.1f}" '
                    f'y="{y}" width="{width:.1f}" height="{ROW - 1}" '
                    f'fill="{color(name)}" rx="2"/>'
                )
                chars = int(width / (FONT * 0.6)) - 1
                if chars >= 4:
                    text = name if len(name) <= chars else name[: chars - 2] + ".."
                    out.append(
                        f'<text x="{x + 3:.1f}" y="{y + ROW - 5}">'
                        f"{html.escape(text)}</text>"
                    )
                out.append("</g>")
                draw(children, x, d + 1)
            x += width

    draw(root, 0.0, 0)
    out.append("</svg>")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stacks", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--title", default="")
    ap.add_argument("--unit", default="samples")
    args = ap.parse_args()
    args.out.write_text(render(parse(args.stacks), args.title, args.unit))


if __name__ == "__main__":
    main()
