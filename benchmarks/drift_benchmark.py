"""Statistical and speed benchmark of panelcast.monitoring.drift on synthetic windows.

Draws a reference window and three current windows (no drift / irrelevant shift / relevant
shift) of 12 numeric + 4 categorical columns, many times per size, and prints how often
columns and the dataset verdict are flagged, against the targets (PASS/MISS, never an
assertion). A speed section times build_profile + compare at 1M x 16 vs 1M x 16.

    .venv/bin/python benchmarks/drift_benchmark.py                 # full default run
    .venv/bin/python benchmarks/drift_benchmark.py --sizes 2000,10000 --repeats 50 --no-speed
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from panelcast.monitoring.drift import DriftThresholds, build_profile, compare  # noqa: E402

DEFAULT_SIZES = (2_000, 10_000, 100_000, 1_000_000)
DEFAULT_REPEATS = {2_000: 200, 10_000: 200, 100_000: 100, 1_000_000: 20}
BASE_MISSING = 0.03  # rate of missing values in two columns, in every window
SCENARIOS = {
    # name: (numeric shift in std units, share points moved between two categories,
    #        missing rate injected in column n0_normal)
    "none": (0.0, 0.0, 0.0),
    "irrelevant": (0.02, 0.01, 0.0),
    "relevant": (0.25, 0.10, 0.10),
}


@dataclass(frozen=True)
class NumericSpec:
    """A numeric column: draw(rng, n, shift) with the mean moved by shift * true std."""

    name: str
    draw: Callable[[np.random.Generator, int, float], np.ndarray]
    base_missing: float = 0.0


@dataclass(frozen=True)
class CategoricalSpec:
    name: str
    labels: tuple[str, ...]
    probs: tuple[float, ...]

    def draw(self, rng: np.random.Generator, n: int, moved: float) -> pd.Series:
        p = np.array(self.probs)
        src, dst = int(np.argmax(p)), len(p) - 1  # most frequent -> least frequent
        p[src] -= moved
        p[dst] += moved
        codes = rng.choice(len(p), size=n, p=p / p.sum())
        # pandas' default string dtype, built with a vectorised take.
        return (
            pd.Series(pd.array(list(self.labels), dtype="str")).take(codes).reset_index(drop=True)
        )


def _normal(mu: float, sd: float):
    return lambda rng, n, s: rng.normal(mu + s * sd, sd, n)


def _lognormal(sigma: float, scale: float):
    sd = scale * np.sqrt((np.exp(sigma**2) - 1) * np.exp(sigma**2))
    return lambda rng, n, s: scale * rng.lognormal(0.0, sigma, n) + s * sd


def _poisson(lam: float):
    # Integer counts: shift the rate so the mean moves by s * std (W1 = |mean shift|).
    return lambda rng, n, s: rng.poisson(lam + s * np.sqrt(lam), n)


def _negbin(mu: float, r: float):
    sd = np.sqrt(mu + mu**2 / r)

    def draw(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
        m = mu + s * sd
        return rng.negative_binomial(r, r / (r + m), n)

    return draw


def _zipf(k: int, a: float) -> tuple[float, ...]:
    w = 1.0 / np.arange(1, k + 1) ** a
    return tuple(w / w.sum())


NUMERIC = (
    NumericSpec("n0_normal", _normal(0.0, 1.0)),
    NumericSpec("n1_normal", _normal(50.0, 10.0), BASE_MISSING),
    NumericSpec("n2_normal", _normal(-3.0, 0.5)),
    NumericSpec("n3_normal", _normal(1000.0, 200.0)),
    NumericSpec("l0_lognormal", _lognormal(0.5, 1.0)),
    NumericSpec("l1_lognormal", _lognormal(1.0, 1.0)),
    NumericSpec("l2_lognormal", _lognormal(1.0, 100.0), BASE_MISSING),
    NumericSpec("l3_lognormal", _lognormal(1.25, 10.0)),
    NumericSpec("c0_poisson", _poisson(0.7)),
    NumericSpec("c1_poisson", _poisson(4.0)),
    NumericSpec("c2_poisson", _poisson(15.0)),
    NumericSpec("c3_negbin", _negbin(30.0, 3.0)),
)
CATEGORICAL = (
    CategoricalSpec("k0_channel", ("web", "store", "phone"), (0.6, 0.3, 0.1)),
    CategoricalSpec("k1_region", tuple(f"region_{i}" for i in range(5)), _zipf(5, 0.5)),
    CategoricalSpec("k2_segment", tuple(f"segment_{i:02d}" for i in range(12)), _zipf(12, 0.8)),
    CategoricalSpec("k3_product", tuple(f"product_{i:02d}" for i in range(20)), _zipf(20, 1.0)),
)
NUM_NAMES = [s.name for s in NUMERIC]
CAT_NAMES = [s.name for s in CATEGORICAL]
ALL_NAMES = NUM_NAMES + CAT_NAMES
MISSING_COLUMN = "n0_normal"


def draw_window(rng: np.random.Generator, n: int, scenario: str) -> pd.DataFrame:
    shift, moved, missing = SCENARIOS[scenario]
    data: dict[str, object] = {}
    for spec in NUMERIC:
        values = spec.draw(rng, n, shift).astype(np.float64)
        rate = spec.base_missing + (missing if spec.name == MISSING_COLUMN else 0.0)
        if rate > 0:
            values[rng.random(n) < rate] = np.nan
        data[spec.name] = values
    for spec in CATEGORICAL:
        data[spec.name] = spec.draw(rng, n, moved)
    return pd.DataFrame(data)


def pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run_size(n: int, repeats: int, rng: np.random.Generator, thresholds: DriftThresholds) -> dict:
    """Flag counts per scenario and column over `repeats` reference/current draws."""
    cols = len(ALL_NAMES)
    flags = {s: np.zeros((repeats, cols), bool) for s in SCENARIOS}
    dist = {s: np.zeros((repeats, cols), bool) for s in SCENARIOS}
    miss = {s: np.zeros((repeats, cols), bool) for s in SCENARIOS}
    effect = {s: np.full((repeats, cols), np.nan) for s in SCENARIOS}
    dataset = {s: np.zeros(repeats, bool) for s in SCENARIOS}
    t0 = time.perf_counter()
    for r in range(repeats):
        profile = build_profile(draw_window(rng, n, "none"), NUM_NAMES, CAT_NAMES)
        for scenario in SCENARIOS:
            report = compare(profile, draw_window(rng, n, scenario), thresholds)
            dataset[scenario][r] = report["drifted"]
            for j, name in enumerate(ALL_NAMES):
                row = report["columns"][name]
                flags[scenario][r, j] = row["drifted"]
                dist[scenario][r, j] = row["distribution_drifted"]
                miss[scenario][r, j] = row["missing_drifted"]
                if row["effect"] is not None:
                    effect[scenario][r, j] = row["effect"]
    return {
        "n": n,
        "repeats": repeats,
        "seconds": time.perf_counter() - t0,
        "flags": flags,
        "dist": dist,
        "miss": miss,
        "effect": effect,
        "dataset": dataset,
    }


def summarise(res: dict, thresholds: DriftThresholds) -> dict:
    """Print one size's table; return the figures and PASS/MISS per target."""
    n, reps = res["n"], res["repeats"]
    num = slice(0, len(NUM_NAMES))
    cat = slice(len(NUM_NAMES), len(ALL_NAMES))
    mcol = ALL_NAMES.index(MISSING_COLUMN)
    out: dict[str, float | bool] = {}
    print(f"\n=== n = {n:,} rows per window, {reps} repeats ({res['seconds']:.1f} s wall) ===")
    for scenario in ("none", "irrelevant"):
        rates = res["flags"][scenario].mean(axis=0)
        ds = res["dataset"][scenario].mean()
        worst = ALL_NAMES[int(rates.argmax())]
        ok_col = rates.max() <= 0.05
        ok_ds = ds <= 0.01
        print(
            f"{scenario:>10}: columns flagged mean {pct(rates.mean())} max {pct(rates.max())}"
            f" ({worst}) [target <= 5%: {verdict(ok_col)}]; dataset drifted {pct(ds)}"
            f" [target <= 1%: {verdict(ok_ds)}]"
        )
        out |= {
            f"{scenario}_col_mean": float(rates.mean()),
            f"{scenario}_col_max": float(rates.max()),
            f"{scenario}_dataset": float(ds),
            f"{scenario}_pass": bool(ok_col and ok_ds),
        }
    rel = "relevant"
    d_num = res["dist"][rel][:, num].mean(axis=0)
    d_cat = res["dist"][rel][:, cat].mean(axis=0)
    d_miss = res["miss"][rel][:, mcol].mean()
    d_ds = res["dataset"][rel].mean()
    ok = min(d_num.min(), d_cat.min(), d_miss, d_ds) >= 0.95
    print(
        f"  relevant: numeric +0.25 std detected mean {pct(d_num.mean())} min {pct(d_num.min())}"
        f" ({NUM_NAMES[int(d_num.argmin())]}); categorical 10 pts mean {pct(d_cat.mean())}"
        f" min {pct(d_cat.min())}; missing 0->10% {pct(d_miss)}; dataset {pct(d_ds)}"
        f" [target >= 95%: {verdict(ok)}]"
    )
    out |= {
        "relevant_numeric_min": float(d_num.min()),
        "relevant_categorical_min": float(d_cat.min()),
        "relevant_missing": float(d_miss),
        "relevant_dataset": float(d_ds),
        "relevant_pass": bool(ok),
    }
    # Effect sizes against the thresholds: the margin that the p-value does not have to cover.
    e = res["effect"]
    print(
        "   effects: numeric W1/std  none p99 {:.3f} | irrelevant median {:.3f} p99 {:.3f} |"
        " relevant p1 {:.3f}  (threshold {:g})".format(
            np.nanpercentile(e["none"][:, num], 99),
            np.nanmedian(e["irrelevant"][:, num]),
            np.nanpercentile(e["irrelevant"][:, num], 99),
            np.nanpercentile(e["relevant"][:, num], 1),
            thresholds.numeric_effect,
        )
    )
    print(
        "            categorical TV none p99 {:.3f} | irrelevant median {:.3f} p99 {:.3f} |"
        " relevant p1 {:.3f}  (threshold {:g})".format(
            np.nanpercentile(e["none"][:, cat], 99),
            np.nanmedian(e["irrelevant"][:, cat]),
            np.nanpercentile(e["irrelevant"][:, cat], 99),
            np.nanpercentile(e["relevant"][:, cat], 1),
            thresholds.categorical_effect,
        )
    )
    return out


def _peak_rss_reset() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux clear_refs 5); returns current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kb("VmRSS") * 1024
    except OSError:
        return None


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def speed(n: int, rng: np.random.Generator, repeats: int, thresholds: DriftThresholds) -> dict:
    """CPU time and peak extra memory of build_profile + compare, and compare alone."""
    print(f"\n=== speed: {n:,} reference rows vs {n:,} current rows, {len(ALL_NAMES)} columns ===")
    ref = draw_window(rng, n, "none")
    cur = draw_window(rng, n, "relevant")
    data_mb = (ref.memory_usage(deep=True).sum() + cur.memory_usage(deep=True).sum()) / 2**20
    print(f"loaded data: {data_mb:.0f} MB (both frames); load average {os.getloadavg()}")
    full, comp, wall_full, wall_comp = [], [], [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        profile = build_profile(ref, NUM_NAMES, CAT_NAMES)
        c1, w1 = time.process_time(), time.perf_counter()
        compare(profile, cur, thresholds)
        c2, w2 = time.process_time(), time.perf_counter()
        full.append(c2 - c0)
        comp.append(c2 - c1)
        wall_full.append(w2 - w0)
        wall_comp.append(w2 - w1)
    # Memory, measured in separate runs (tracing slows the timed code down).
    mem: dict[str, float | None] = {}
    for label, fn in (
        ("full", lambda: compare(build_profile(ref, NUM_NAMES, CAT_NAMES), cur, thresholds)),
        ("compare", lambda p=profile: compare(p, cur, thresholds)),
    ):
        base = _peak_rss_reset()
        fn()
        mem[f"rss_{label}"] = (_status_kb("VmHWM") * 1024 - base) / 2**20 if base else None
        tracemalloc.start()
        fn()
        mem[f"tracemalloc_{label}"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    profile_kb = len(json.dumps(profile)) / 1024
    med_full, med_comp = statistics.median(full), statistics.median(comp)
    print(
        f"build_profile + compare: CPU median {med_full:.2f} s (min {min(full):.2f}, "
        f"{repeats} runs), wall median {statistics.median(wall_full):.2f} s "
        f"[target <= 3 s CPU: {verdict(med_full <= 3.0)}]"
    )
    print(
        f"compare alone:           CPU median {med_comp:.2f} s (min {min(comp):.2f}), "
        f"wall median {statistics.median(wall_comp):.2f} s"
    )
    for label in ("full", "compare"):
        tm, rss = mem[f"tracemalloc_{label}"], mem[f"rss_{label}"]
        rss_txt = f"{rss:.0f} MB" if rss is not None else "n/a"
        print(
            f"peak extra memory ({'build+compare' if label == 'full' else 'compare alone'}): "
            f"tracemalloc {tm:.0f} MB (numpy + Python allocations); peak RSS above the loaded "
            f"data {rss_txt} (VmHWM after clear_refs reset) "
            f"[target <= 300 MB: {verdict(max(tm, rss or 0) <= 300)}]"
        )
    print(f"profile size: {profile_kb:.0f} KiB as JSON")
    return {
        "cpu_full_median": med_full,
        "cpu_compare_median": med_comp,
        "wall_full_median": statistics.median(wall_full),
        "profile_kib": profile_kb,
        **mem,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats per size (default: 200 at <=10k, 100 at 100k, 20 at 1M)",
    )
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--speed-rows", type=int, default=1_000_000)
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    for field in ("numeric_effect", "categorical_effect", "missing_effect", "alpha"):
        parser.add_argument("--" + field.replace("_", "-"), type=float, default=None)
    args = parser.parse_args(argv)

    overrides = {
        k: getattr(args, k)
        for k in ("numeric_effect", "categorical_effect", "missing_effect", "alpha")
        if getattr(args, k) is not None
    }
    thresholds = DriftThresholds(**overrides)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rng = np.random.default_rng(args.seed)
    print(f"thresholds: {thresholds}")
    print(
        f"columns: {len(NUM_NAMES)} numeric {NUM_NAMES}, {len(CAT_NAMES)} categorical "
        f"{CAT_NAMES}; {BASE_MISSING:.0%} missing in n1/l2 in every window"
    )
    print(
        "scenarios: none | irrelevant = numeric +0.02 std, 1 pt moved from the most to the "
        "least frequent category | relevant = +0.25 std, 10 pts moved, n0 missing 0% -> 10%"
    )
    results: dict[str, object] = {"thresholds": repr(thresholds), "sizes": {}}
    for n in sizes:
        reps = args.repeats or DEFAULT_REPEATS.get(n, 200 if n <= 10_000 else 20)
        res = run_size(n, reps, rng, thresholds)
        results["sizes"][n] = summarise(res, thresholds) | {"repeats": reps}
    if not args.no_speed:
        results["speed"] = speed(args.speed_rows, rng, args.speed_repeats, thresholds)

    print("\n=== summary (PASS/MISS, no assertion) ===")
    for n, fig in results["sizes"].items():
        print(
            f"n={n:>9,}: no drift {verdict(fig['none_pass'])}, irrelevant shift "
            f"{verdict(fig['irrelevant_pass'])}, relevant shift {verdict(fig['relevant_pass'])}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
