"""Search quality on realistic synthetic click data: does the default output beat the
baselines a user runs first?

For each data size and seed, on the same train / validation / test rows:

- the constant predictor and logistic regression on one-hot features (scikit-learn),
- for each preset, one ``dnas search --plugin dlrm --preset P`` run with default settings
  (its report holds the hand-sized reference DLRM, random search at equal compute, with
  ``--baseline random,tpe`` also Optuna's TPE at equal compute, and the search's best
  architecture).

Prints one table per data size: test log loss and AUC (mean +- standard deviation over
seeds), parameters, and whether the search beat each baseline by more than the noise.

    python benchmarks/bench_quality.py --rows 10000,100000 --seeds 1,2 \\
        --presets emb_dim,emb_card,mlp,joint --work /tmp/bench-quality

Everything is written under ``--work`` (a temporary directory by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def logistic_regression(rows: int, seed: int) -> dict[str, float]:
    """One-hot LR on exactly the rows the plugin's synthetic data hook serves."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.preprocessing import OneHotEncoder

    from dnas_dlrm.data import CriteoArrays, generate_realistic

    table = CriteoArrays.from_synthetic(generate_realistic(rows, seed=seed))
    splits = table.splits()
    train = np.concatenate([splits["weights"], splits["arch"]])
    encoder = OneHotEncoder(handle_unknown="ignore", min_frequency=2)
    encoder.fit(table.sparse[train])

    def features(part: np.ndarray):
        return sparse.hstack([encoder.transform(table.sparse[part]),
                              sparse.csr_matrix(table.dense[part])]).tocsr()

    best = None
    for c in (0.03, 0.1, 0.3):  # C chosen on validation, as a user would
        model = LogisticRegression(C=c, max_iter=500).fit(features(train), table.labels[train])
        val = log_loss(table.labels[splits["val"]],
                       model.predict_proba(features(splits["val"]))[:, 1])
        if best is None or val < best[0]:
            best = (val, model)
    assert best is not None
    probs = best[1].predict_proba(features(splits["test"]))[:, 1]
    y = table.labels[splits["test"]]
    return {"logloss": float(log_loss(y, probs)), "auc": float(roc_auc_score(y, probs)),
            "params": int(best[1].coef_.size + 1)}


def search(preset: str, rows: int, seed: int, out: Path, baseline: str = "random") -> dict:
    """One default search; returns its summary (the baseline table included)."""
    argv = [sys.executable, "-m", "dnas_cli.main", "search", "--plugin", "dlrm",
            "--preset", preset, "--out", str(out), "--baseline", baseline,
            "--set", "domain.data.synthetic=realistic",
            "--set", f"domain.data.synthetic_rows={rows}", "--set", f"seed={seed}"]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    summary["wall_seconds"] = time.perf_counter() - started
    return summary


def _add(table: dict[str, dict[str, list[float]]], model: str, logloss: float | None,
         auc: float | None, params: float | None) -> None:
    cell = table.setdefault(model, {"logloss": [], "auc": [], "params": []})
    for key, value in (("logloss", logloss), ("auc", auc), ("params", params)):
        if value is not None:
            cell[key].append(value)


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} +- {statistics.stdev(values):.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--presets", default="emb_dim,emb_card,mlp,joint")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--baseline", default="random", choices=["random", "tpe", "random,tpe"],
                        help="black-box baselines of each search (dnas search --baseline)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    for rows in (int(r) for r in args.rows.split(",")):
        table: dict[str, dict[str, list[float]]] = {}

        verdicts: list[str] = []
        for seed in seeds:
            lr = logistic_regression(rows, seed)
            _add(table, "logistic regression", lr["logloss"], lr["auc"], lr["params"])
            for preset in args.presets.split(","):
                summary = search(preset, rows, seed, work / f"{rows}-{seed}-{preset}",
                                 args.baseline)
                for found in summary["baselines"].values():
                    for model in found["models"]:
                        name = model["model"]
                        if name != "constant predictor":
                            name = f"{preset}: {name}"
                        _add(table, name, model["test"], model["test_auc"], model["params"])
                    for v in found["verdicts"]:
                        if v["margin"] is not None:
                            verdicts.append(
                                f"seed {seed} {preset} vs {v['baseline']}: search better by "
                                f"{v['margin']:+.4f} (noise {v['noise'] or float('nan'):.4f})")
                print(f"  [{rows} rows, seed {seed}] {preset}: "
                      f"{summary['wall_seconds']:.0f} s, "
                      f"{summary['diverged_architectures']} diverged", flush=True)
        print(f"\n### {rows} rows, seeds {args.seeds} (test set)\n")
        print("| model | test log loss | test AUC | params |")
        print("|---|---|---|---|")
        for model, cell in table.items():
            params = f"{statistics.fmean(cell['params']):.3g}" if cell["params"] else "-"
            print(f"| {model} | {_cell(cell['logloss'])} | {_cell(cell['auc'])} | {params} |")
        print()
        for line in verdicts:
            print(f"- {line}")
        print(flush=True)
    print(f"runs under {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
