"""Render a results JSON of `dinosae bench kernels --out FILE` as markdown tables.

    python bench/summarize.py bench/results/cpu_kernels.json

One table per dtype and mode: median milliseconds of every implementation, and the
speed-up of ``sphere_ops:auto`` over eager torch, torch.compile and geoopt.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict


def _ms(value: float | None) -> str:
    return "failed" if value is None or math.isnan(value) else f"{value:.2f}"


def _ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or math.isnan(num) or math.isnan(den):
        return "-"
    return f"{num / den:.2f}x"


def summarize(payload: dict) -> str:
    results = payload["results"]
    impls = list(dict.fromkeys(r["impl"] for r in results))
    table: dict[tuple, dict[str, float | None]] = defaultdict(dict)
    for r in results:
        key = (r["dtype"], r["mode"], r["op"], f"{r['rows']}x{r['dim']}")
        table[key][r["impl"]] = None if r["error"] else r["median_ms"]
    out = []
    for dtype, mode in dict.fromkeys((k[0], k[1]) for k in table):
        out.append(f"\n{dtype}, {mode} (median ms; last columns: speed-up of sphere_ops:auto)\n")
        out.append("| op | shape | " + " | ".join(impls) + " | vs eager | vs compile | vs geoopt |")
        out.append("|---" * (len(impls) + 5) + "|")
        for (d, m, op, shape), row in table.items():
            if (d, m) != (dtype, mode):
                continue
            ours = row.get("sphere_ops:auto")
            cells = [_ms(row.get(i)) for i in impls]
            speedups = [_ratio(row.get(ref), ours) for ref in ("eager", "compile", "geoopt")]
            out.append(f"| {op} | {shape} | " + " | ".join(cells) + " | " + " | ".join(speedups) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(summarize(json.load(f)))
