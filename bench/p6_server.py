#!/usr/bin/env python
"""P6: the query server (Run_Service.py --serve) against the one-shot CLI.

Targets on the 2-core machine: report-only median <= 10 ms and >= 200 queries/s; a repeated
.pt2 <= 10 ms.

  report-only  POST /query {"tasks": [...]} (no evaluation), cycling over every distinct non-empty
               set of the pool's six tasks (63), the pool warm (one pass over all sets first);
               each client keeps one HTTP connection; 1, 4 and 16 concurrent clients (threads of
               this process, the server in its own process, both on the same cores).
  .pt2         GET /model.pt2?tasks=...: the first request of a set (the server exports it, once)
               and a repeated one (kept in memory), for the first n tasks, n = 1..5.
  CLI          `Run_Service.py --no-eval --queriedTask ...` in a new process, wall time: starting
               Python, importing torch, reading the pool, building and describing the model.

    python bench/p6_server.py                    # the authors' pool when ../shared is present
    python bench/p6_server.py --seconds 10 --cli_runs 5
"""
import http.client
import itertools
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import common


def start_server(pool, threads, log) -> tuple[subprocess.Popen, tuple[str, int]]:
    argv = [sys.executable, str(common.ROOT / "Run_Service.py"), "--dataset", pool.profile.name,
            "--db", str(pool.root), "--serve", "--port", "0", "--no-eval", *(["--threads", str(threads)] * bool(threads))]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, cwd=common.ROOT)
    for line in proc.stdout:
        found = re.match(r"serving on http://([\d.]+):(\d+)/", line)
        if found:
            return proc, (found.group(1), int(found.group(2)))
    proc.wait()
    log.seek(0)
    raise SystemExit(f"the server did not start (exit {proc.returncode}):\n{log.read()}")


def timed_requests(address, requests, stop_at=None) -> list[float]:
    """Seconds per request, one keep-alive connection; requests: iterable of (method, path, body)."""
    conn, times = http.client.HTTPConnection(*address, timeout=300), []
    for method, path, body in requests:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        tic = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - tic)
        if response.status != 200:
            raise SystemExit(f"{method} {path}: HTTP {response.status}")
        if stop_at is not None and time.perf_counter() > stop_at:
            break
    conn.close()
    return times


def queries(task_sets, start=0):
    """Report-only queries over the task sets, round and round, starting at set `start`."""
    for i in itertools.count(start):
        yield "POST", "/query", json.dumps({"tasks": list(task_sets[i % len(task_sets)])})


def report_only(address, task_sets, clients: int, seconds: float) -> dict:
    results = [None] * clients
    stop_at = time.perf_counter() + seconds

    def client(k):
        results[k] = timed_requests(address, queries(task_sets, start=k * 7), stop_at)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    tic = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - tic
    times = sorted(t for r in results for t in r)
    return {"clients": clients, "queries": len(times), "qps": len(times) / wall,
            "median_ms": 1000 * statistics.median(times), "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))]}


def cli_query(pool, tasks, runs: int) -> float:
    argv = [sys.executable, str(common.ROOT / "Run_Service.py"), "--dataset", pool.profile.name,
            "--db", str(pool.root), "--no-eval", "--queriedTask", *tasks]
    times = []
    for _ in range(runs):
        tic = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=common.ROOT)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--seconds", type=float, default=None, help="seconds per report-only measurement (default 5)")
    p.add_argument("--cli_runs", type=int, default=None, help="cold CLI queries timed (default 5)")
    args = p.parse_args(argv)
    common.setup(args)
    seconds = args.seconds or (0.5 if args.quick else 5.0)
    repeats = args.repeats or (3 if args.quick else 20)
    pool, source = common.cifar_pool(args.quick)
    tasks = common.TASKS
    task_sets = [s for n in range(1, len(tasks) + 1) for s in itertools.combinations(tasks, n)]

    with tempfile.TemporaryFile("w+") as log:  # the server's stderr
        tic = time.perf_counter()
        proc, address = start_server(pool, args.threads, log)
        started_s = time.perf_counter() - tic
        try:
            timed_requests(address, itertools.islice(queries(task_sets), len(task_sets)))  # warm the pool
            loads = [report_only(address, task_sets, c, seconds) for c in ((1, 2) if args.quick else (1, 4, 16))]
            sizes = (1, 2) if args.quick else (1, 2, 3, 4, 5)
            pt2 = {}
            for n in sizes:
                path = "/model.pt2?tasks=" + ",".join(tasks[:n])
                first = timed_requests(address, [("GET", path, None)])[0]
                again = statistics.median(timed_requests(address, [("GET", path, None)] * repeats))
                pt2[n] = {"first_ms": 1000 * first, "repeated_ms": 1000 * again}
            server_n5 = statistics.median(timed_requests(
                address, [("POST", "/query", json.dumps({"tasks": tasks[:sizes[-1]]}))] * repeats))
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    cli_runs = args.cli_runs or (1 if args.quick else 5)
    cli_s = cli_query(pool, tasks[:sizes[-1]], cli_runs)

    rows = [[f"report-only, {r['clients']} client{'s' if r['clients'] > 1 else ''}", r["median_ms"], r["p99_ms"],
             r["qps"], r["queries"]] for r in loads]
    rows += [[f".pt2 n(Q)={n}, first / repeated", f"{v['first_ms']:,.1f} / {v['repeated_ms']:,.2f}", "", "", ""]
             for n, v in pt2.items()]
    rows.append([f"report-only n(Q)={sizes[-1]}: server / CLI new process",
                 f"{1000 * server_n5:,.2f} / {1000 * cli_s:,.0f}", "", "", ""])
    table = common.markdown_table(["", "median (ms)", "p99 (ms)", "queries/s", "queries"], rows)
    notes = [f"pool: {source} ({pool.root}); {len(task_sets)} distinct task sets; {seconds:g} s per load; "
             f".pt2 repeated: median of {repeats}; CLI: median of {cli_runs} runs, `Run_Service.py --no-eval` "
             f"(cold process, OS file cache warm); server started and listening in {started_s:.1f} s."]
    figures = {"report_only": loads, "pt2": pt2, "server_query_ms": 1000 * server_n5, "cli_query_s": cli_s,
               "server_start_s": started_s, "task_sets": len(task_sets), "pool": source}
    common.finish(args, "P6 query server", table, notes, figures)


if __name__ == "__main__":
    main()
