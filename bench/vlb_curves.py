"""Plot per-t terms of the variational bound from `diffusion-studio nll --csv` files (matplotlib, bench-only).

    python bench/vlb_curves.py OUT.png LABEL=terms.csv [LABEL=terms.csv ...] [--variance beta|beta_tilde]

Left: L_{t−1} against the paper's t on log–log axes, L_0 (t = 1) and L_T (t = T + 1) marked; right: the running sum
from t = 1, ending at the bound without L_T. Made for the README's "The variational bound" section.
"""
from __future__ import annotations

import argparse
import csv
import sys

import numpy as np


def read(path: str, variance: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(t, bits/dim, weight, L_T) from an nll CSV, t ascending, without the L_T row."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    col = f"{variance}_bits_per_dim"
    prior = float(rows[0][col])
    body = sorted(rows[1:], key=lambda r: int(r["t"]))
    t = np.array([int(r["t"]) for r in body])
    y = np.array([float(r[col]) for r in body])
    w = np.array([int(r["weight"]) for r in body])
    return t, y, w, prior


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("curves", nargs="+", metavar="LABEL=CSV")
    p.add_argument("--variance", choices=("beta", "beta_tilde"), default="beta")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sym = {"beta": "β", "beta_tilde": "β̃"}[args.variance]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
    for k, spec in enumerate(args.curves):
        label, path = spec.split("=", 1)
        t, y, w, prior = read(path, args.variance)
        colour = f"C{k}"
        cum = np.cumsum(y * w)
        ax.loglog(t[y > 0], y[y > 0], color=colour, lw=1.4,
                  label=f"{label}: {cum[-1] + prior:.3f} bits/dim")
        ax.plot([1], [y[0]], "o", color=colour, ms=7)
        if prior > 0:
            ax.plot([t[-1] + 1], [prior], "s", color=colour, ms=6)
        ax2.semilogx(t, cum, color=colour, lw=1.6, label=label)
    ax.annotate("L₀", (1, ax.get_ylim()[1]), xytext=(3, -12), textcoords="offset points")
    ax.set_xlabel("paper t")
    ax.set_ylabel(f"L_t−1 (σ² = {sym}), bits/dim")
    ax.set_title("Terms of the bound (● L₀ at t = 1, ■ L_T at t = T + 1)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    ax2.set_xlabel("paper t")
    ax2.set_ylabel("Σ up to t, bits/dim")
    ax2.set_title("Running sum from t = 1", fontsize=10)
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
