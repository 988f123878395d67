#!/usr/bin/env python3
"""Compares the loss curves of rigtune-worker runs (their "step N/M  loss X"
lines): each run against the first (the reference), next to the bf16 noise
floor when a second reference is given.

    loss_curve.py REFERENCE.log RUN.log [RUN.log ...]

Prints, per run, the largest and mean |loss - reference loss| over the
steps both ran, and the losses at a few steps, as a Markdown table.
"""
import re
import sys

STEP = re.compile(r"^step (\d+)/\d+\s+loss ([0-9.eE+-]+)")


def losses(path):
    out = {}
    with open(path) as f:
        for line in f:
            m = STEP.match(line)
            if m:
                out[int(m.group(1))] = float(m.group(2))
    if not out:
        sys.exit(f"{path}: no 'step N/M  loss X' lines (did the run fail? see the log)")
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    ref_path, runs = sys.argv[1], sys.argv[2:]
    ref = losses(ref_path)
    last = max(ref)
    marks = sorted({1, last // 4, last // 2, 3 * last // 4, last} - {0})
    print("| run | steps | max abs diff | mean abs diff | " +
          " | ".join(f"loss @{s}" for s in marks) + " |")
    print("|---|---|---|---|" + "---|" * len(marks))
    print(f"| {ref_path} (reference) | {len(ref)} | | | " +
          " | ".join(f"{ref[s]:.4f}" for s in marks) + " |")
    for path in runs:
        run = losses(path)
        common = sorted(set(ref) & set(run))
        diffs = [abs(run[s] - ref[s]) for s in common]
        print(f"| {path} | {len(run)} | {max(diffs):.4f} | {sum(diffs) / len(diffs):.4f} | " +
              " | ".join(f"{run[s]:.4f}" if s in run else "-" for s in marks) + " |")


if __name__ == "__main__":
    main()
