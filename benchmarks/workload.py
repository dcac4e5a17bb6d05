"""Benchmark: workload synthesis speed and characterization of a 10M-row requests table.

Runs, in one process, side by side:

1. synthesis: fleetlab's vectorised, chunked synthesizer (events/s, generation only and
   generation + Parquet streaming, written in a background thread) vs a per-request Python generator in the style of
   vidur's (a loop drawing one Gamma inter-arrival and one size per request with
   scipy), on the same model;
2. characterization of a 10M-row requests table: ``fleetlab.workload.characterize`` vs
   a pandas/scipy implementation of the same statistics (inter-arrival CV and
   quantiles, rate at 4 bin sizes, IDC at 7 windows, periodogram, burst windows, per
   field quantiles, 5 family fits on 5,000-value samples, KS on 200,000, Hill, Spearman
   on 200,000 rows).

3. with FLEETLAB_MIRROR, requests from ServeGen m-large client profiles (one hour from
   18:00 of day 1), next to ServeGen's own generator on the same hour (its figure from
   shared/peers/workload-generators.md: it is not installed here).

Usage: ``python benchmarks/workload.py [--rows 10000000] [--peer-requests 200000]
[--servegen-hours 1]``.
Uses the Azure LLM 2023 conversation trace from FLEETLAB_MIRROR when present, else
the tour's built-in model. Prints both figures and the ratio.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from fleetlab import traces, workload
from fleetlab.workload._tour import MIRROR_TRACE, builtin_model


def _model() -> tuple[workload.WorkloadModel, str]:
    mirror = os.environ.get("FLEETLAB_MIRROR")
    if mirror and Path(mirror, *MIRROR_TRACE).is_file():
        real = traces.load(Path(mirror, *MIRROR_TRACE))
        return workload.fit(real, seed=0)[0], "fitted on Azure LLM 2023 conversation"
    return builtin_model(), "built-in conversation-like model"


def bench_synth(model: workload.WorkloadModel, rows: int, peer_requests: int) -> dict[str, float]:
    rate = model.arrival.rate.mean_rate_per_s
    duration = 86400.0
    scale = rows / (rate * duration)
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(c.height for c in workload.iter_chunks(model, duration_s=duration, scale=scale, seed=1))
    gen, gen_cpu = time.perf_counter() - t0, time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        out = workload.synth(
            model, Path(tmp) / "s.parquet", duration_s=duration, scale=scale, seed=1
        )
        write, write_cpu = time.perf_counter() - t0, time.process_time() - c0
        file_mb = (Path(tmp) / "s.parquet").stat().st_size / 1e6
    assert out["rows"] == n
    # peer: one request at a time, as vidur's SyntheticRequestGenerator does
    from scipy import stats

    cv = model.arrival.renewal.cv
    k = 1.0 / cv**2
    mean_iat = 1.0 / (rate * scale)
    rng = np.random.default_rng(1)
    t0, c0 = time.perf_counter(), time.process_time()
    t, reqs = 0.0, []
    for _ in range(peer_requests):
        t += float(stats.gamma.rvs(k, scale=mean_iat / k, random_state=rng))
        p = math.ceil(stats.lognorm.rvs(1.0, scale=1020, random_state=rng))
        o = math.ceil(stats.lognorm.rvs(0.9, scale=129, random_state=rng))
        reqs.append((t, p, o))
    peer, peer_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "events": n,
        "gen_s": gen,
        "write_s": write,
        "peer_events": peer_requests,
        "peer_s": peer,
        "gen_cpu": gen_cpu,
        "write_cpu": write_cpu,
        "peer_cpu": peer_cpu,
        "file_mb": file_mb,
    }


def pandas_characterize(df: pl.DataFrame, seed: int = 0) -> dict[str, object]:
    """The same statistics as fleetlab's requests characterization, in pandas + scipy."""
    import pandas as pd
    from scipy import stats

    pdf = df.select("arrival_s", "prompt_tokens", "output_tokens").to_pandas()
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {}
    t = pdf["arrival_s"].sort_values().reset_index(drop=True)
    t = t - t.iloc[0]
    gaps = t.diff().dropna()
    duration = float(t.iloc[-1])
    out["iat_cv"] = gaps.std(ddof=0) / gaps.mean()
    # renewal CV: gaps after dividing out a rate curve with >= 32 events per bin
    rb = next(
        x
        for x in (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
        if len(t) / duration * x >= 32
    )
    per_bin = (t // rb).astype("int64").value_counts().sort_index()
    per_bin = per_bin.reindex(range(int(duration // rb) + 1), fill_value=0)
    cum = np.concatenate([[0.0], np.cumsum(per_bin.to_numpy(dtype=float))])
    op = np.interp(t.to_numpy(), np.arange(cum.size) * rb, cum)
    ogaps = pd.Series(np.diff(op))
    out["renewal_cv"] = ogaps.std(ddof=0) / ogaps.mean()
    out["iat_q"] = gaps.quantile([0.5, 0.9, 0.99]).tolist()
    rates = {}
    for b in (1.0, 10.0, 60.0, 300.0, 3600.0, 86400.0):
        if 10 <= duration / b <= 20_000:
            rates[b] = (t // b).value_counts().sort_index()
    idc = {}
    for w in (0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0):
        if duration / w >= 10:
            n_bins = int(duration // w)
            c = (t // w).astype("int64")
            c = c[c < n_bins].value_counts().reindex(range(n_bins), fill_value=0)
            idc[w] = c.var(ddof=0) / c.mean()
    out["idc"] = idc
    b = next(
        x
        for x in (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
        if duration / x <= 8192
    )
    c = (t // b).astype("int64").value_counts().sort_index()
    out["spectrum_peak"] = float(np.abs(np.fft.rfft(c.to_numpy() - c.mean()))[1:].argmax())
    rate = len(t) / duration
    w = next((x for x in (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0) if x * rate >= 5), 60.0)
    c = (t // w).astype("int64").value_counts().sort_index().astype(float)
    base = c.rolling(61, center=True, min_periods=1).median()
    out["bursts"] = int(((c >= 2 * base) & (c > base + 3 * np.sqrt(base))).sum())
    for f in ("prompt_tokens", "output_tokens"):
        x = pdf[f].to_numpy().astype(float)
        out[f"{f}_q"] = np.quantile(x, [0.5, 0.9, 0.99]).tolist()
        fit_x = rng.choice(x[x > 0], 5000, replace=False) + rng.uniform(-0.5, 0.5, 5000)
        ks_x = np.sort(
            rng.choice(x[x > 0], 200_000, replace=False) + rng.uniform(-0.5, 0.5, 200_000)
        )
        best = None
        for dist in (stats.lognorm, stats.gamma, stats.weibull_min, stats.burr12, stats.expon):
            params = dist.fit(fit_x, floc=0)
            aic = 2 * (len(params) - 1) - 2 * np.sum(dist.logpdf(fit_x, *params))
            ks = stats.kstest(ks_x, dist.cdf, args=params).statistic
            if best is None or aic < best[0]:
                best = (aic, dist.name, ks)
        out[f"{f}_best"] = best
        top = np.sort(x[x > 0])
        k = max(10, math.ceil(0.02 * top.size))
        out[f"{f}_hill"] = 1 / np.mean(np.log(top[-k:] / top[-k - 1]))
    sample = pdf.sample(200_000, random_state=seed)
    out["spearman"] = sample[["prompt_tokens", "output_tokens"]].corr(method="spearman").iloc[0, 1]
    return out


def bench_characterize(model: workload.WorkloadModel, rows: int) -> dict[str, float]:
    rate = model.arrival.rate.mean_rate_per_s
    duration = 7 * 86400.0
    df = model.sample(duration_s=duration, scale=rows / (rate * duration), seed=2)
    t0, c0 = time.perf_counter(), time.process_time()
    ours = workload.characterize(df, seed=0)
    ours_s, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    peer = pandas_characterize(df)
    peer_s, peer_cpu = time.perf_counter() - t0, time.process_time() - c0
    a = ours.metrics["arrivals"]
    assert abs(a["iat_cv"] - peer["iat_cv"]) < 1e-6 * max(1.0, a["iat_cv"])  # same statistic
    return {
        "rows": df.height,
        "ours_s": ours_s,
        "peer_s": peer_s,
        "ours_cpu": ours_cpu,
        "peer_cpu": peer_cpu,
    }


SERVEGEN = ("servegen-alibaba-bailian-2025", "language_m-large.tar.gz")


def bench_clients(mirror: str, hours: float) -> dict[str, float] | None:
    """Requests from ServeGen m-large client profiles, 18:00 of day 1 for ``hours``.

    The same hour ServeGen's own generator was timed on (shared/peers/workload-generators.md:
    1,069,661 requests, 8.4 s of generation = 127.6 k req/s, at the trace's natural rate).
    """
    path = Path(mirror, *SERVEGEN)
    if not path.is_file():
        return None
    prof = traces.load(path)
    start = 64800.0
    hour = prof.filter(
        (pl.col("window_start_s") >= start) & (pl.col("window_start_s") < start + hours * 3600)
    ).with_columns(pl.col("window_start_s") - start)
    model, _ = workload.fit(hour)
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(c.height for c in workload.iter_chunks(model, seed=1))
    return {
        "events": n,
        "clients": len(model.clients.clients) if model.clients else 0,
        "wall": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--peer-requests", type=int, default=200_000)
    ap.add_argument(
        "--servegen-hours", type=float, default=1.0, help="hours of ServeGen m-large to synthesize"
    )
    args = ap.parse_args()
    model, what = _model()
    print(f"model: {what}; cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    s = bench_synth(model, args.rows, args.peer_requests)
    n, pn = s["events"], s["peer_events"]
    print(
        "(wall = elapsed; cpu = this process's CPU time, robust when other jobs load the machine)"
    )
    for label, key in (("fleetlab generate only", "gen"), ("fleetlab + Parquet", "write")):
        print(
            f"synthesis, {label:23s}: {n:,} events, wall {s[key + '_s']:.2f} s = "
            f"{n / s[key + '_s'] / 1e6:.2f} M/s, cpu {s[key + '_cpu']:.2f} s = "
            f"{n / s[key + '_cpu'] / 1e6:.2f} M/s"
        )
    print(
        f"synthesis, per-request peer (vidur-style scipy loop): {pn:,} events, wall {s['peer_s']:.2f} s "
        f"= {pn / s['peer_s'] / 1e3:.1f} k/s, cpu {s['peer_cpu']:.2f} s = {pn / s['peer_cpu'] / 1e3:.1f} k/s"
    )
    print(
        f"synthesis, Parquet file: {s['file_mb']:.0f} MB ({s['file_mb'] * 1e6 / n:.1f} bytes/event)"
    )
    ratio = (n / s["write_cpu"]) / (pn / s["peer_cpu"])
    print(
        f"synthesis ratio fleetlab+Parquet / peer (cpu): {ratio:.0f}x; goal >= 5 M events/s (cpu): "
        f"generate-only {'met' if n / s['gen_cpu'] >= 5e6 else 'not met'}, "
        f"with Parquet {'met' if n / s['write_cpu'] >= 5e6 else 'not met'}"
    )
    mirror = os.environ.get("FLEETLAB_MIRROR")
    g = bench_clients(mirror, args.servegen_hours) if mirror else None
    if g is not None:
        print(
            f"client profiles (ServeGen m-large, {args.servegen_hours:g} h from 18:00, "
            f"{g['clients']:.0f} clients): {g['events']:,.0f} requests, wall {g['wall']:.2f} s = "
            f"{g['events'] / g['wall'] / 1e6:.2f} M/s, cpu {g['cpu']:.2f} s = "
            f"{g['events'] / g['cpu'] / 1e6:.2f} M/s; ServeGen's generator: 0.128 M req/s "
            f"(1,069,661 requests in 8.4 s, shared/peers/workload-generators.md)"
        )
    c = bench_characterize(model, args.rows)
    print(
        f"characterize {c['rows']:,}-row requests table: fleetlab wall {c['ours_s']:.2f} s / cpu "
        f"{c['ours_cpu']:.2f} s; pandas/scipy wall {c['peer_s']:.2f} s / cpu {c['peer_cpu']:.2f} s; "
        f"ratio (pandas / fleetlab) wall {c['peer_s'] / c['ours_s']:.2f}x, cpu "
        f"{c['peer_cpu'] / c['ours_cpu']:.2f}x"
    )


if __name__ == "__main__":
    pl.Config.set_tbl_rows(5)
    main()
