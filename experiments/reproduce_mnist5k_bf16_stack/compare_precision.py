#!/usr/bin/env python
"""Two ``fastair reproduce`` outputs trained in different ways (fp32 one run at a time, bf16
stacked), side by side: for every grid point the test ``-ln p(x)``, ``Δinf`` and ``-L(x)`` of
each (mean ± std over seeds), their difference, and whether it lies within the seed spread
(the larger of the two standard deviations); then the chosen rows, and the wall times.

    python -m experiments.reproduce_mnist5k_bf16_stack.compare_precision BASE_DIR OTHER_DIR \
        [--out FILE.md]

The models differ (other arithmetic, so other trajectories): only differences beyond the seed
spread say something about the precision.
"""
import argparse
import csv
import os

from fastair.io import atomic_write_text

KEYS = (("test_nll", "-ln p(x)"), ("test_gap", "Δinf"), ("test_nelbo", "-L(x)"))


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _f(row, key):
    return float(row[key])


def _cell(row, key):
    return f"{_f(row, key):.2f} ± {_f(row, key + '_std'):.2f}"


def compare(base_dir, other_dir, base_name="base", other_name="other"):
    base = {(r["label"], r["strength"]): r for r in read(os.path.join(base_dir, "grid.csv"))}
    other = {(r["label"], r["strength"]): r for r in read(os.path.join(other_dir, "grid.csv"))}
    out = [f"| model | strength | seeds | {base_name}: -ln p(x) | {other_name}: -ln p(x) | "
           "Δ -ln p(x) | Δ Δinf | Δ -L(x) | within the seed spread |",
           "|---|---|---|---|---|---|---|---|---|"]
    outside = 0
    for point, b in base.items():
        o = other.get(point)
        if o is None:
            continue
        deltas, inside = [], True
        for key, _ in KEYS:
            d = _f(o, key) - _f(b, key)
            spread = max(_f(o, key + "_std"), _f(b, key + "_std"))
            inside &= abs(d) <= spread
            deltas.append(f"{d:+.2f}")
        outside += not inside
        out.append(f"| {point[0]} | {point[1] or '–'} | {b['seeds']}/{o['seeds']} | "
                   f"{_cell(b, 'test_nll')} | {_cell(o, 'test_nll')} | " + " | ".join(deltas)
                   + f" | {'yes' if inside else '**no**'} |")
    out.append(f"\n{len(out) - 2 - outside} of {len(out) - 2} grid points within the seed "
               "spread in all three numbers.\n")
    for title, d in ((base_name, base_dir), (other_name, other_dir)):
        out += [f"\nChosen on validation, {title} ({d}/table.csv):\n",
                "| model | strength | " + " | ".join(name for _, name in KEYS) + " |",
                "|---|---|---|---|---|"]
        for r in read(os.path.join(d, "table.csv")):
            out.append(f"| {r['label']} | {r['strength'] or '–'} | "
                       + " | ".join(_cell(r, key) for key, _ in KEYS) + " |")
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base_dir")
    p.add_argument("other_dir")
    p.add_argument("--names", nargs=2, default=("fp32, one at a time", "bf16, stacked"))
    p.add_argument("--out", default=None, help="also write the Markdown here")
    args = p.parse_args(argv)
    text = compare(args.base_dir, args.other_dir, *args.names)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
