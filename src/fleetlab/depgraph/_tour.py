"""The depgraph stop of ``fleetlab tour``: mine a generated topology, its blast radius,
and the Orion-style miner scored against the truth (on the mirror's DeathStarBench
traces too when ``FLEETLAB_MIRROR`` is set)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.depgraph._blast import blast_radii
from fleetlab.depgraph._evaluate import evaluate_flow_mining
from fleetlab.depgraph._graph import write_graph
from fleetlab.depgraph._spans import mine_spans
from fleetlab.depgraph._synth import Traffic, generate_spans, topology
from fleetlab.depgraph._traces import analyze_traces
from fleetlab.depgraph._view import graph_report
from fleetlab.report import Report

#: the generated workload: DeathStarBench-like social network, 150 req/s for 20 s
TOUR_TOPOLOGY = "social-network"
TOUR_TRAFFIC = Traffic(rate_per_s=150.0, duration_s=20.0)
#: a real trace with parent links used when the mirror is present
MIRROR_FILE = "traceweaver-deathstarbench/hotel_reservation/hotel_load100.jsonl.gz"


def tour_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """Mine a generated topology, rank blast radii, score flow mining; write the graph.

    Parameters
    ----------
    workdir
        Folder for ``depgraph.json`` and ``depgraph_spans.parquet``.
    seed
        Seed of the generated traffic.

    Returns
    -------
    (Report, dict)
        Report sections and headline numbers: services, edges, top blast radius, flow
        mining F1 (generated, and real when the mirror was used), ``data`` (what was used).
    """
    topo = topology(TOUR_TOPOLOGY)
    spans = generate_spans(topo, TOUR_TRAFFIC, seed=seed)
    spans.write_parquet(workdir / "depgraph_spans.parquet")
    graph = mine_spans(spans)
    write_graph(graph, workdir / "depgraph.json", overwrite=True)
    traces = analyze_traces(spans, max_traces=1000, seed=seed)
    report = graph_report(graph, title="depgraph", traces=traces)
    radii = blast_radii(graph)
    truth_ok = set(graph.graph.edges) == topo.edges()
    evals = {"generated": evaluate_flow_mining(spans, seed=seed)}
    data = f"generated {TOUR_TOPOLOGY} topology ({spans.height:,} spans)"
    mirror = os.environ.get("FLEETLAB_MIRROR")
    if mirror and (Path(mirror) / MIRROR_FILE).is_file():
        from fleetlab import traces as fl_traces

        real = fl_traces.load(Path(mirror) / MIRROR_FILE)
        evals["traceweaver hotel_load100"] = evaluate_flow_mining(real, seed=seed)
        data += f" + mirror {MIRROR_FILE}"
    sec = report.section("depgraph: what this stop did")
    sec.text(
        f"Spans were generated from the built-in {TOUR_TOPOLOGY} topology "
        f"({TOUR_TRAFFIC.rate_per_s:g} req/s for {TOUR_TRAFFIC.duration_s:g} s, seed {seed}), "
        "mined into a service graph with Polars group-bys and compared with the topology's "
        f"true edges ({'exact match' if truth_ok else 'MISMATCH'}). The parent links were "
        "then stripped and the graph inferred again from flow timing alone (Orion-style), "
        f"with unrelated background traffic added. Data: {data}."
    )
    sec.table(
        pl.DataFrame(
            [
                {
                    "dataset": name,
                    "edge precision": r["edges"]["precision"],
                    "edge recall": r["edges"]["recall"],
                    "edge F1": r["edges"]["f1"],
                    "triple F1": r["triples"]["f1"],
                    "concurrency": r["concurrency"],
                }
                for name, r in evals.items()
            ]
        )
    )
    top: dict[str, Any] = radii[0] if radii else {"service": "", "share_of_traffic": 0.0}
    summary = {
        "data": data,
        "services": graph.graph.number_of_nodes(),
        "edges": graph.graph.number_of_edges(),
        "edges_match_truth": truth_ok,
        "top_blast_radius": f"{top['service']} ({100 * top['share_of_traffic']:.0f}% of traffic)",
        "flow_mining_f1": {k: round(v["edges"]["f1"], 3) for k, v in evals.items()},
        "graph": str(workdir / "depgraph.json"),
    }
    return report, summary
