"""Each benchmark script runs on a tiny input (--quick: random networks and images) and prints its
table; the figures themselves come from full runs (bench/RESULTS.md), not from tests."""
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

SCRIPTS = {"p1_query_latency.py": "P1 query latency", "p2_fused_throughput.py": "P2 fused vs sequential",
           "p3_vs_oracle.py": "P3 task model", "p4_extraction.py": "P4 expert extraction",
           "views_study.py": "Expert accuracy vs cached views", "p5_oracle_choice.py": "P5 Oracle choice",
           "p6_server.py": "P6 query server"}


@pytest.mark.slow  # subprocesses
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_script_runs_on_a_tiny_input(script, tmp_path):
    out = tmp_path / "figures.json"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", "--threads", "1",
                             "--json", str(out)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"## {SCRIPTS[script]}" in result.stdout and "|---|" in result.stdout and "machine:" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["title"].startswith(SCRIPTS[script])
    if script == "p2_fused_throughput.py":
        assert figures["max_abs_logit_diff"] <= 1e-4  # the two models it times compute the same logits
        assert figures["imagenet"]["max_abs_logit_diff"] <= 1e-4  # also for the MobileNetV2 pool
