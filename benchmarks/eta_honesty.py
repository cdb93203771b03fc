"""How honest the ETA was: read the output of ``oste train ... > LOG`` (not a terminal: a progress line at least
every 10 s) and print, at 5, 10, 25, 50 and 75% of the actual total time, the estimated total against it.

    oste train ../shared/data/real-dev/mix --out runs/mix > mix.log
    python benchmarks/eta_honesty.py mix.log
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

LINE = re.compile(r"^\[ *(?P<elapsed>[^\]]+)\] (?P<phase>.+) (?P<done>\d+)/(?P<total>\d+), "
                  r"ETA (?P<eta>.+) \(total about")
UNITS = {"h": 3600, "min": 60, "s": 1}


def seconds(text: str) -> float:
    """``1 h 07 min`` / ``4 min 11 s`` / ``56 s`` -> seconds."""
    parts = text.split()
    return float(sum(int(value) * UNITS[unit] for value, unit in zip(parts[::2], parts[1::2])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    args = parser.parse_args()
    text = args.log.read_text(encoding="utf-8", errors="replace")
    rows = [(seconds(m["elapsed"]), m["phase"], int(m["done"]), int(m["total"]), seconds(m["eta"]))
            for m in map(LINE.match, text.splitlines()) if m]
    total = re.search(r"^total time: (.+)$", text, flags=re.M)
    if not rows or total is None:
        raise SystemExit(f"{args.log}: no progress lines or no 'total time:' line (did the job finish?)")
    actual = seconds(total.group(1))
    gaps = [b[0] - a[0] for a, b in zip(rows, rows[1:])]
    print(f"actual total {actual:.0f} s; {len(rows)} progress lines, "
          f"the longest gap between two {max(gaps, default=0):.0f} s")
    print(f"{'at':>5} {'elapsed s':>10} {'phase':>18} {'done':>9} {'estimated total s':>18} {'error':>7}")
    for share in (0.05, 0.10, 0.25, 0.50, 0.75):
        elapsed, phase, done, count, eta = min(rows, key=lambda row: abs(row[0] - share * actual))
        estimate = elapsed + eta
        print(f"{share:>5.0%} {elapsed:>10.0f} {phase:>18} {f'{done}/{count}':>9} {estimate:>18.0f} "
              f"{100 * (estimate - actual) / actual:>+6.0f}%")


if __name__ == "__main__":
    main()
