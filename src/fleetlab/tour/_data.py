"""Tour stop: the dataset catalog and a verified pull (real data with FLEETLAB_MIRROR).

Lives in ``fleetlab.tour`` because ``store`` and ``traces`` may not import ``report``
(they are independent siblings in the layers contract).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fleetlab import traces
from fleetlab.report import Report
from fleetlab.tour._foundation import demo_requests

REAL = "azure-llm-inference-2023"


def _demo_dataset(root: Path, seed: int) -> tuple[traces.Dataset, Path]:
    """The ingest stop's demo workload written as an Azure LLM 2023 CSV, as a catalog entry."""
    demo = demo_requests(seed)
    stamps = (
        np.datetime64("2023-11-16T18:15:00")
        + (demo["arrival_s"].to_numpy() * 1e6).astype("timedelta64[us]")
    ).astype(str)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    lines += [
        f"{s.replace('T', ' ')},{p},{o}"
        for s, p, o in zip(stamps, demo["prompt_tokens"], demo["output_tokens"], strict=True)
    ]
    data = ("\n".join(lines) + "\n").encode()
    mirror = root / "mirror"
    (mirror / "demo-llm").mkdir(parents=True, exist_ok=True)
    (mirror / "demo-llm" / "trace.csv").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    entry = traces.DatasetFile(
        path="trace.csv",
        size=len(data),
        sha256=sha,
        format="azure-llm",
        content_sha256=sha,
        source="synthesized by the tour",
    )
    ds = traces.Dataset(
        name="demo-llm",
        title="synthesized LLM trace",
        description="tour demo",
        license="CC0",
        homepage="-",
        urls=("-",),
        citation="-",
        files=(entry,),
    )
    return ds, mirror


def data_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """The dataset catalog, and a pull that verifies sha256s and converts to Parquet."""
    report = Report("datasets")
    data = report.section("Datasets: catalog, pull, verify, convert")
    catalog = traces.datasets()
    data.table(
        [
            {
                "name": d.name,
                "files": len(d.files),
                "MB": round(d.size / 1e6, 1),
                "formats": ", ".join(d.formats) or "-",
                "license": d.license[:40],
            }
            for d in catalog
        ],
        max_rows=len(catalog),
    )
    mirror = os.environ.get("FLEETLAB_MIRROR")
    if mirror and (Path(mirror) / REAL).is_dir():
        result = traces.pull_dataset(REAL, cache=workdir / "datasets")
        source = f"real data: {REAL} copied from FLEETLAB_MIRROR and verified"
    else:
        ds, demo_mirror = _demo_dataset(workdir / "data-demo", seed)
        result = traces.pull_dataset(ds, mirror=demo_mirror, cache=workdir / "datasets")
        source = "synthesized data (no FLEETLAB_MIRROR): a small Azure-LLM-format trace"
    rows_out = {
        k: pl.scan_parquet(v).select(pl.len()).collect().item() for k, v in result.canonical.items()
    }
    data.text(
        f"Pulled {source}: every file's sha256 checked against the catalog, then "
        "converted to canonical Parquet."
    )
    data.table([{"file": k, "canonical rows": n} for k, n in rows_out.items()])
    summary = {
        "datasets_in_catalog": len(catalog),
        "pulled_files": len(result.raw),
        "canonical_rows": sum(rows_out.values()),
        "data": "real (mirror)" if mirror and (Path(mirror) / REAL).is_dir() else "synthesized",
    }
    return report, summary
