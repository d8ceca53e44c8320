"""Load check for `mmrag serve`: N concurrent clients on loopback for a bounded time and request count.

Starts the real server (`mmrag serve`, its own process) over the demo corpus's index, fires the demo questions
at `POST /v1/ask` from N clients at once while a prober times `GET /healthz`, then reports request latency
(p50/p95), throughput, health-check latency while the model is busy, and that every request sent got a
correct 200 answer back (none failed, none lost).

    .venv/bin/python benchmarks/load_bench.py                    # tiny model, 4 clients, 30 s
    .venv/bin/python benchmarks/load_bench.py --model default --duration 120 --top-n 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, print_table, write_result  # noqa: E402


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); nan for no data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index_dir: Path, model: str, port: int, sets: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from mmrag_rft.cli import main; main()", "serve", "--index", str(index_dir),
           "--model", model, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout_s: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the server did not come up within {timeout_s:.0f} s; see {log}")


async def run_load(base: str, questions: list[str], *, clients: int, duration_s: float, max_requests: int,
                   request_timeout_s: float, health_every_s: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    server_totals: list[float] = []
    queue_waits: list[float] = []
    failures: list[str] = []
    health: list[tuple[float, bool, int]] = []  # (latency, busy, queued)
    state = {"issued": 0, "answered": 0, "sent_per_client": [0] * clients}
    t_start = time.monotonic()
    stop_at = t_start + duration_s
    done = asyncio.Event()

    async def client(k: int, http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at and state["issued"] < max_requests:
            i = state["issued"]
            state["issued"] += 1
            state["sent_per_client"][k] += 1
            q = questions[i % len(questions)]
            t0 = time.perf_counter()
            try:
                r = await http.post("/v1/ask", json={"question": q}, timeout=request_timeout_s)
            except httpx.HTTPError as e:
                failures.append(f"request {i}: {type(e).__name__}: {e}")
                continue
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                failures.append(f"request {i}: HTTP {r.status_code}: {r.text[:200]}")
                continue
            d = r.json()
            if d.get("question") != q or not isinstance(d.get("judgements"), list) or "answer" not in d:
                failures.append(f"request {i}: answer does not belong to its question ({d.get('question')!r})")
                continue
            state["answered"] += 1
            latencies.append(dt)
            server_totals.append(d["timings"].get("total_s", float("nan")))
            queue_waits.append(d["timings"].get("queue_s", float("nan")))

    async def prober(http: httpx.AsyncClient) -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                r = await http.get("/healthz", timeout=10)
                h = r.json()
                health.append((time.perf_counter() - t0, bool(h.get("busy")), int(h.get("queued", 0))))
            except httpx.HTTPError as e:
                failures.append(f"healthz: {type(e).__name__}: {e}")
            try:
                await asyncio.wait_for(done.wait(), health_every_s)
            except asyncio.TimeoutError:
                pass

    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=base, limits=limits) as http, \
            httpx.AsyncClient(base_url=base) as probe_http:
        probe = asyncio.create_task(prober(probe_http))
        await asyncio.gather(*(client(k, http) for k in range(clients)))
        wall = time.monotonic() - t_start
        done.set()
        await probe
        after = (await probe_http.get("/healthz")).json()

    busy = [lat for lat, b, _ in health if b]
    return {
        "issued": state["issued"], "answered": state["answered"], "failed": len(failures),
        "lost": state["issued"] - state["answered"] - sum(not f.startswith("healthz") for f in failures),
        "failures": failures[:20], "sent_per_client": state["sent_per_client"], "wall_s": wall,
        "throughput_rps": state["answered"] / wall if wall > 0 else float("nan"),
        "latency_s": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                      "max": max(latencies, default=float("nan")),
                      "mean": sum(latencies) / len(latencies) if latencies else float("nan")},
        "server_pipeline_s": {"p50": percentile(server_totals, 50), "p95": percentile(server_totals, 95)},
        "server_queue_s": {"p50": percentile(queue_waits, 50), "p95": percentile(queue_waits, 95)},
        "healthz": {"probes": len(health), "probes_while_busy": len(busy),
                    "max_queued_seen": max((q for _, _, q in health), default=0),
                    "p50_s_while_busy": percentile(busy, 50), "p95_s_while_busy": percentile(busy, 95),
                    "max_s_while_busy": max(busy, default=float("nan"))},
        "server_after": after,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-lm", help="tiny-lm (fast, random weights) | tiny-vlm | default")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds during which new requests are sent.")
    ap.add_argument("--max-requests", type=int, default=400, help="Stop sending after this many requests.")
    ap.add_argument("--top-n", type=int, default=None, help="Candidates per question (pipeline top_n).")
    ap.add_argument("--request-timeout", type=float, default=900.0)
    ap.add_argument("--health-every", type=float, default=0.25, help="Seconds between /healthz probes.")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "load",
                    help="Where the demo index is built (reused while the corpus is unchanged).")
    ap.add_argument("--out", type=Path, default=None, help="Result JSON (default benchmarks/results/load.json).")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.max_requests < 1:
        ap.error("--clients and --max-requests must be >= 1, --duration > 0")

    from mmrag_rft.data import demo_corpus_dir, load_samples_jsonl
    from mmrag_rft.evaluation.demo import build_or_load_demo_index

    args.work.mkdir(parents=True, exist_ok=True)
    build_or_load_demo_index(args.work).close()
    questions = [s.question for s in load_samples_jsonl(demo_corpus_dir() / "questions.jsonl")]
    port = free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    log = args.work / "server.log"
    sets = [f"top_n={args.top_n}"] if args.top_n else []
    t0 = time.monotonic()
    proc = start_server(args.work / "index", args.model, port, sets, log)
    try:
        wait_healthy(base, proc, log)
        startup_s = time.monotonic() - t0
        print(f"server up at {base} in {startup_s:.1f} s (model {args.model}); "
              f"{args.clients} clients for {args.duration:.0f} s / at most {args.max_requests} requests")
        res = asyncio.run(run_load(base, questions, clients=args.clients, duration_s=args.duration,
                                   max_requests=args.max_requests, request_timeout_s=args.request_timeout,
                                   health_every_s=args.health_every))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    ok = res["failed"] == 0 and res["lost"] == 0 and res["answered"] == res["issued"] and \
        res["server_after"].get("queued") == 0 and not res["server_after"].get("busy")
    lat, hz = res["latency_s"], res["healthz"]
    print_table(f"mmrag serve under load ({args.model}, {args.clients} clients)",
                ["metric", "value"],
                [["requests sent", res["issued"]], ["answered (200, own question)", res["answered"]],
                 ["failed", res["failed"]], ["lost", res["lost"]],
                 ["latency p50 (s)", lat["p50"]], ["latency p95 (s)", lat["p95"]], ["latency max (s)", lat["max"]],
                 ["throughput (req/s)", res["throughput_rps"]],
                 ["pipeline time p50 (s)", res["server_pipeline_s"]["p50"]],
                 ["queue wait p95 (s)", res["server_queue_s"]["p95"]],
                 ["healthz probes while busy", hz["probes_while_busy"]],
                 ["healthz p50 / p95 while busy (ms)",
                  f"{hz['p50_s_while_busy'] * 1000:.1f} / {hz['p95_s_while_busy'] * 1000:.1f}"],
                 ["all requests answered", "yes" if ok else "NO"]])
    for f in res["failures"]:
        print("  failure:", f)
    path = write_result("load", {
        "config": {"model": args.model, "clients": args.clients, "duration_s": args.duration,
                   "max_requests": args.max_requests, "top_n": args.top_n, "host": "127.0.0.1",
                   "questions": len(questions), "corpus": "demo corpus (40 candidates)"},
        "server_startup_s": startup_s, "ok": ok, **res,
        "notes": "One model, one worker thread: requests queue, so latency grows with the number of clients while "
                 "throughput stays at one pipeline at a time; /healthz is served by the event loop and does not "
                 "wait for the model. Absolute times depend on the (shared) CPU recorded under 'machine'.",
    }, args.out)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
