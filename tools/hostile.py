"""Hostile use of the running app: fuzzed pictures, a crowd larger than the queue, and memory over time.

    python -m tools.hostile [--quick] [--url URL] [--fuzz 2000] [--crowd 100] [--soak 5000] [--json PATH]
                            [--env KEY=VALUE] [--compare-env KEY=VALUE]

Starts `python app.py` (tools/loadtest.py's server, clients and reference answers; --url tests a running
one) and then:
1. fuzz: --fuzz damaged pictures (tools/fuzz.py: every format Pillow writes, animated ones too, with bit
   flips, truncations, shuffled and repeated chunks and absurd declared sizes) sent through /predict by
   FUZZ_CLIENTS clients. Each must get an answer or a plain message within FUZZ_LIMIT_S; a request that
   hangs, or a server that dies, is a crash; the generic "Something went wrong" counts apart. The server's
   memory before and after (and after a short rest) says whether it returns to its level.
2. crowd: --crowd clients send one request each at the same moment, more than the app's queue holds.
   Each must get its own picture's answer or the server's "queue is full, try again" (gradio_client's
   QueueError); anything else is lost, a different answer is wrong. Then one more request must be answered
   right. Throughput and p50 / p95 wait of the answered ones.
3. memory: --soak requests from SOAK_CLIENTS clients (no more than the queue holds); the server's RSS
   after every tenth of them. The
   growth per 1,000 requests after the first fifth (the warm-up) is the slope of a line fitted to the
   samples.
--env starts the app with more in its environment (an allocator setting such as MALLOC_ARENA_MAX=2);
--compare-env runs the fuzz and memory phases again on a fresh app with that added, for a figure with and
without it. A count of 0 skips a phase.
--quick does about a tenth of each (the crowd against a queue a tenth as long). The last line printed
is one JSON object with every figure; --json writes it too. Exits 1 if a goal is missed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tools import fuzz
from tools import loadtest as lt

FUZZ_CLIENTS = 4
FUZZ_LIMIT_S = 10.0  # every fuzzed picture is answered within this
SOAK_CLIENTS = 16
CROWD_LIMIT_S = 300.0  # a crowd request still unanswered after this is lost
RSS_GOAL_MB_PER_1000 = 50.0
QUEUE_SIZE = 64  # app.py's QUEUE_SIZE (the quick run starts the app with a tenth of it)


# ---------------------------------------------------------------- 1. fuzzed pictures
def phase_fuzz(srv: lt.Server, files: list[Path], pictures, refs) -> dict:
    print(f"\n[1/3] fuzz: {len(files)} damaged pictures through /predict from {FUZZ_CLIENTS} clients "
          f"(each answered within {FUZZ_LIMIT_S:.0f} s)", flush=True)
    lt.run_clients(srv.url, pictures, refs, lt.Tally(), 2, 2 * len(pictures))  # warm up both workers
    rss_before = lt.rss_mb(srv.pid)
    outcomes: dict[str, int] = {}
    slow, generic, lock = [], [], threading.Lock()
    todo = iter(enumerate(files))
    progress = max(1, len(files) // 10)

    def worker():
        client = lt.new_client(srv.url)
        while srv.alive():
            with lock:
                item = next(todo, None)
            if item is None:
                return
            i, path = item
            row = lt._send_fault(client, path, FUZZ_LIMIT_S)
            with lock:
                outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
                if row["outcome"] == "stalled" or row["seconds"] > FUZZ_LIMIT_S:
                    slow.append(f"{path.name}: {row['seconds']} s")
                if row["outcome"] == "error" and lt.GENERIC_ERROR in row["message"]:
                    generic.append(path.name)
                done = sum(outcomes.values())
            if done % progress == 0:
                print(f"  {done}/{len(files)}: {dict(sorted(outcomes.items()))}", flush=True)

    t = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(FUZZ_CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    rss_after = lt.rss_mb(srv.pid)
    time.sleep(5)
    end = lt.final_check(srv, pictures, refs)
    sent = sum(outcomes.values())
    crashes = len(slow) + (not end["server_alive"]) + (len(files) - sent)  # hung, died, or never answered
    out = {"fuzzed": sent, "fuzz_crashes": crashes, "fuzz_outcomes": outcomes, "fuzz_generic_errors": len(generic),
           "fuzz_seconds": round(wall, 1), "fuzz_slow": slow[:20], "fuzz_generic_files": generic[:20],
           "fuzz_server_answers_after": end["server_answers_after_faults"],
           "fuzz_rss_mb_before": rss_before, "fuzz_rss_mb_after": rss_after,
           "fuzz_rss_mb_after_rest": end["rss_mb_after_faults"]}
    print(f"  {sent} sent in {wall:.0f} s: {outcomes}; hung or past {FUZZ_LIMIT_S:.0f} s: {len(slow)}, generic "
          f"errors: {len(generic)}; server alive {end['server_alive']}, answering right "
          f"{end['server_answers_after_faults']}; RSS {rss_before} -> {rss_after} MB "
          f"({end['rss_mb_after_faults']} MB after a rest)", flush=True)
    for line in slow[:5] + generic[:5]:
        print("   ", line)
    return out


# ---------------------------------------------------------------- 2. a crowd beyond the queue
def phase_crowd(srv: lt.Server, pictures, refs, clients: int, queue_size: int | None) -> dict:
    print(f"\n[2/3] crowd: {clients} clients send one request each at the same moment (queue holds "
          f"{queue_size if queue_size else '?'})", flush=True)
    tally, rss_before = lt.Tally(), lt.rss_mb(srv.pid)
    lt.run_clients(srv.url, pictures, refs, tally, clients, clients, together=True, timeout_s=CROWD_LIMIT_S)
    f = tally.figures()
    after = lt.final_check(srv, pictures, refs)  # (each client was a new session the server remembers)
    lost = f["errors"]  # any exception but "busy", a hang past the limit included (a mismatch is not one)
    out = {"crowd_requests": clients, "crowd_answered": f["answered"] - f["mismatches"], "crowd_busy": f["busy"],
           "crowd_lost": lost + (clients - f["requests"]), "crowd_wrong": f["mismatches"],
           "crowd_throughput_rps": f["throughput_rps"], "crowd_wait_ms_p50": f["latency_ms_p50"],
           "crowd_wait_ms_p95": f["latency_ms_p95"], "crowd_answers_after": after["server_answers_after_faults"],
           "crowd_problems": f["problems"], "crowd_rss_mb_before": rss_before,
           "crowd_rss_mb_after": after["rss_mb_after_faults"]}
    lt.print_figures(f, f"; answered right afterwards: {after['server_answers_after_faults']}; RSS {rss_before} "
                        f"-> {after['rss_mb_after_faults']} MB")
    return out


# ---------------------------------------------------------------- 3. memory over time
def growth_per_1000(series: dict[int, float | None], warmup: int) -> float | None:
    """MB per 1,000 requests after `warmup`: the slope of a least-squares line through the samples."""
    pts = [(n, v) for n, v in sorted(series.items()) if n >= warmup and v is not None]
    if len(pts) < 2:
        return None
    n, v = np.asarray(pts, float).T
    return round(float(np.polyfit(n / 1000, v, 1)[0]), 1)


def phase_memory(srv: lt.Server, pictures, refs, soak: int, clients: int = SOAK_CLIENTS, label: str = "") -> dict:
    every, warmup = max(1, soak // 10), max(1, soak // 5)
    print(f"\n[3/3] memory{label}: {soak} requests from {clients} clients; RSS every {every}", flush=True)
    tally, series = lt.Tally(), {0: lt.rss_mb(srv.pid)}

    def sample(done):
        if done % every == 0:
            series[done] = lt.rss_mb(srv.pid)
            print(f"  after {done:>5} requests: RSS {series[done]} MB", flush=True)

    lt.run_clients(srv.url, pictures, refs, tally, clients, soak, after_each=sample)
    f = tally.figures()
    slope = growth_per_1000(series, warmup)
    lt.print_figures(f, f"; RSS growth after the first {warmup}: {slope} MB per 1,000 requests")
    return {"rss_mb_per_1000_after_warmup": slope, "rss_mb_series": series, "soak_requests": f["requests"],
            "soak_errors": f["errors"], "soak_mismatches": f["mismatches"], "soak_busy": f["busy"],
            "soak_throughput_rps": f["throughput_rps"], "soak_latency_ms_p50": f["latency_ms_p50"],
            "soak_latency_ms_p95": f["latency_ms_p95"], "soak_warmup_requests": warmup}


# ---------------------------------------------------------------- main
def goals(r: dict) -> list[str]:
    missed = []
    if r.get("fuzz_crashes"):
        missed.append(f"{r['fuzz_crashes']} fuzzed picture(s) hung or took the server down")
    if r.get("fuzz_generic_errors"):
        missed.append(f"{r['fuzz_generic_errors']} fuzzed picture(s) got the generic error, not a plain message")
    if "fuzzed" in r and not r["fuzz_server_answers_after"]:
        missed.append("the server did not answer right after the fuzzed pictures")
    if r.get("crowd_lost") or r.get("crowd_wrong"):
        missed.append(f"crowd: {r['crowd_lost']} request(s) lost, {r['crowd_wrong']} wrong")
    if "crowd_requests" in r and not r["crowd_answers_after"]:
        missed.append("the server did not answer right after the crowd")
    if r.get("soak_errors") or r.get("soak_mismatches") or r.get("soak_busy"):
        missed.append(f"memory run: {r['soak_errors']} error(s), {r['soak_mismatches']} mismatch(es), "
                      f"{r['soak_busy']} busy")
    if "soak_requests" in r:
        growth = r["rss_mb_per_1000_after_warmup"]
        if growth is None:
            missed.append("server memory could not be measured (pass a local --url whose server is ours)")
        elif growth > RSS_GOAL_MB_PER_1000:
            missed.append(f"RSS grew {growth} MB per 1,000 requests after the warm-up "
                          f"(goal {RSS_GOAL_MB_PER_1000:.0f})")
    return missed


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env / --compare-env take KEY=VALUE, not {pair!r}")
        out[key] = value
    return out


def run_phases(srv: lt.Server, pictures, files, crowd: int, soak: int, queue_size, soak_clients, label="") -> dict:
    """The phases asked for (a count of 0 skips one) against one server."""
    out = {}
    refs = lt.reference_answers(srv.url, pictures)
    if files:
        out.update(phase_fuzz(srv, files, pictures, refs))
    if crowd:
        out.update(phase_crowd(srv, pictures, refs, crowd, queue_size))
    if soak:
        out.update(phase_memory(srv, pictures, refs, soak, soak_clients, label))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.hostile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="about a tenth of each phase")
    p.add_argument("--url", default=None, help="test this running app instead of starting one")
    p.add_argument("--fuzz", type=int, default=None, help="damaged pictures (default 2000; quick 200; 0 skips)")
    p.add_argument("--crowd", type=int, default=None, help="clients at once (default 100; quick 10; 0 skips)")
    p.add_argument("--soak", type=int, default=None, help="requests in the memory run (default 5000; quick 500; "
                   "0 skips)")
    p.add_argument("--seed", type=int, default=0, help="the fuzzer's seed")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="start the app with this in its environment (e.g. MALLOC_ARENA_MAX=2); repeatable")
    p.add_argument("--compare-env", action="append", default=[], metavar="KEY=VALUE",
                   help="run the fuzz and memory phases again on a fresh app with this added; repeatable")
    p.add_argument("--json", default=None, help="write the figures here too")
    args = p.parse_args(argv)
    tenth = 10 if args.quick else 1
    pick = lambda given, full: full // tenth if given is None else given  # noqa: E731
    n_fuzz, crowd, soak = pick(args.fuzz, 2000), pick(args.crowd, 100), pick(args.soak, 5000)
    queue_size = None if args.url else QUEUE_SIZE // tenth
    soak_clients = min(SOAK_CLIENTS, queue_size or SOAK_CLIENTS)  # never more than the queue holds
    env = {**({"EMOTION_QUEUE_SIZE": str(queue_size)} if queue_size else {}), **_env(args.env)}
    started = time.perf_counter()
    result: dict = {"quick": args.quick, "queue_size": queue_size, "env": _env(args.env)}
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp_name:
        tmp = Path(tmp_name)
        pictures = lt.face_pictures(tmp / "faces")
        fuzz_dir = tmp / "fuzzed"
        fuzz_dir.mkdir()
        files = []
        for name, data in fuzz.fuzzed(n_fuzz, args.seed):
            (fuzz_dir / name).write_bytes(data)
            files.append(fuzz_dir / name)
        with lt.server(args.url, tmp / "app", env) as srv:
            cache_before = lt.cache_usage(srv.cache)
            print(f"app at {srv.url} (pid {srv.pid}); reference answers, one request at a time:", flush=True)
            result.update(run_phases(srv, pictures, files, crowd, soak, queue_size, soak_clients))
            result["cache"] = {"before": cache_before, "after": lt.cache_usage(srv.cache)}
            result["server_alive"] = srv.alive()
        if args.compare_env and not args.url:
            other_env = _env(args.compare_env)
            label = " (" + ", ".join(f"{k}={v}" for k, v in other_env.items()) + ")"
            print(f"\nagain on a fresh app{label}", flush=True)
            with lt.server(None, tmp / "app-compared", {**env, **other_env}) as srv:
                other = run_phases(srv, pictures, files, 0, soak, queue_size, soak_clients, label)
            keep = ("fuzz_crashes", "fuzz_rss_mb_before", "fuzz_rss_mb_after", "fuzz_rss_mb_after_rest",
                    "rss_mb_per_1000_after_warmup", "rss_mb_series", "soak_throughput_rps", "soak_latency_ms_p50")
            result["compared"] = {"env": other_env, **{k: other[k] for k in keep if k in other}}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["goals_missed"] = goals(result)
    result["passed"] = not result["goals_missed"]
    print("\nPASSED" if result["passed"] else "\nGOALS MISSED:\n  " + "\n  ".join(result["goals_missed"]))
    line = json.dumps(result, default=str)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(line, flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
