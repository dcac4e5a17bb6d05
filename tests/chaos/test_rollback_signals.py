"""A fault never outlives its experiment: SIGTERM rolls back, kill -9 is covered by leases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fleetlab.chaos import ProxyClient, running_proxy


def _wait(predicate, timeout_s: float, step_s: float = 0.05) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def _start_runner(tmp_path: Path, api: str, http_port: int) -> subprocess.Popen[bytes]:
    exp = {
        "title": "long fault",
        "proxy": {"api": api},
        "proxies": [{"name": "web", "upstream": f"127.0.0.1:{http_port}"}],
        "load": {"url": "http://{proxy:web}/", "rate_per_s": 10},
        "steady_state": {"window_s": 0.2},
        "method": [
            {
                "name": "slow",
                "proxy": "web",
                "toxic": {"type": "latency", "attributes": {"latency": 50}},
                "duration_s": 60,
            }
        ],
        "lease_ttl_s": 1.5,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    # the runner alone (``fleetlab chaos run`` minus the CLI's imports of every area)
    script = (
        "import sys\n"
        "from fleetlab.chaos import load_experiment, run_experiment\n"
        f"result = run_experiment(load_experiment({str(path)!r}))\n"
        "sys.exit(0 if result.journal['status'] == 'completed' else 1)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_no_fault_survives_the_runner(sig: int, tmp_path: Path, http_port: int) -> None:
    with running_proxy() as handle, ProxyClient(handle.api_url) as client:
        proc = _start_runner(tmp_path, handle.api_url, http_port)
        try:

            def injected() -> bool:
                p = client.proxies().get("web")
                return bool(p and p["toxics"])

            assert _wait(injected, 60.0), proc.stderr.read().decode() if proc.poll() else "no fault"
            toxic = client.proxies()["web"]["toxics"][0]
            assert toxic["lease"]["ttl_s"] == 1.5
            killed_at = time.monotonic()
            proc.send_signal(sig)
            assert _wait(lambda: client.proxies() == {}, 5.0)
            gone_after = time.monotonic() - killed_at
            # leases expire within their TTL (+ the reaper's 0.1 s tick); SIGTERM rolls back
            assert gone_after < 1.5 + 1.0
            rc = proc.wait(10)
            if sig == signal.SIGTERM:
                assert rc == 1  # the run reports 'interrupted', after rolling back
            else:
                assert rc == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
