"""Benchmark `diffrun serve`: what the HTTP server costs and what its scheduler buys, side by side.

Starts the real server (`python -m diffrun serve` from this tree, on the tiny sd model that
`diffrun tiny-model DIR` writes, `--device cpu --threads 1 --max-batch 4 --allow-private`,
OMP_NUM_THREADS=1, HF_HUB_OFFLINE=1) and measures, in one run:

  1. latency   one text-to-image request (b64_json PNG) against the same pipeline call in this process
               (pipelines.load_model + run: same size, steps and seed, torch threads 1), on a kept-alive
               connection (as the openai client sends) and on a new connection per request (as curl);
               medians of --runs interleaved runs; goal <= 1.10x at 16 tiny steps. Pixels compared too.
  2. batching  requests/s of 8 concurrent clients (the server forms micro-batches of up to 4) against
               the same requests sent one at a time; goal >= 1.3x. For reference, the pipeline's own
               gain from 4 requests in one call over 4 calls, in this process.
  3. URL inputs  image-to-image through /v1/images/edits, 4 concurrent clients, inputs as http URLs
               served 300 ms away (a loopback server) against the same images inline as data: URIs;
               goal <= 1.15x.
  2 and 3 alternate their two sides for --rounds rounds (order flipped each round); the figure is the
  median of the per-round ratios.

    python bench/serve.py [--runs 9] [--requests 16] [--rounds 3] [--steps 16] [--size 64] [--json PATH]
    python bench/serve.py --quick      # seconds: checks the script and the server, figures mean little

Ratios, not absolute times, carry over. The machine's load is measured and printed with the figures:
CPU time that other processes used during the run, in cores (this box has few; figures taken while
others run are noisy).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import requests  # noqa: E402
from loopback import LoopbackServer  # noqa: E402
from PIL import Image, ImageChops  # noqa: E402

from diffrun import pipelines  # noqa: E402

GOALS = {"latency": ("<=", 1.10), "batching": (">=", 1.3), "url_inputs": ("<=", 1.15)}


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFRUN_")}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}


# -- machine load -------------------------------------------------------------------------------------
def _cpu_seconds_busy() -> float | None:
    """All CPUs' busy seconds since boot (/proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class LoadMeter:
    """CPU used by everything else on the machine while the benchmark runs, in cores."""

    def __init__(self) -> None:
        self.start_wall = time.monotonic()
        self.start_busy = _cpu_seconds_busy()
        self.start_ours = time.process_time()
        self.load_at_start = os.getloadavg()[0]
        self.children_cpu = 0.0  # the server's CPU seconds, set once it is reaped

    def report(self) -> dict[str, Any]:
        wall = time.monotonic() - self.start_wall
        busy = _cpu_seconds_busy()
        ours = time.process_time() - self.start_ours + self.children_cpu
        out: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_1min_start": round(self.load_at_start, 2),
                               "loadavg_1min_end": round(os.getloadavg()[0], 2), "seconds": round(wall, 1)}
        if busy is not None and self.start_busy is not None:
            out["ours_cores"] = round(ours / wall, 2)
            out["others_cores"] = round(max(0.0, busy - self.start_busy - ours) / wall, 2)
        return out


# -- the server -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def diffrun_server(model_dir: Path, work: Path, max_batch: int,
                   meanwhile: Callable[[], Any]) -> Iterator[tuple[str, Any]]:
    """The real `diffrun serve` in a subprocess; yields its base URL once it is loaded and listening,
    and what `meanwhile` returned (run while the server starts)."""
    ready = work / "ready.json"
    log = (work / "server.log").open("wb")
    cmd = [sys.executable, "-m", "diffrun", "serve", "-m", str(model_dir), "--device", "cpu", "--threads", "1",
           "--port", "0", "--max-batch", str(max_batch), "--allow-private", "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=child_env(), cwd=ROOT)
    try:
        result = meanwhile()
        deadline = time.monotonic() + 180
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: diffrun serve did not start (exit {proc.poll()}):\n{_tail(work)}")
            time.sleep(0.05)
        url = json.loads(ready.read_text())["url"]
        health = requests.get(url + "/health", timeout=10)
        if health.status_code != 200:
            raise SystemExit(f"error: /health answered {health.status_code}: {health.text[:500]}")
        yield url, result
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0:
                print(f"note: diffrun serve exited {code} after SIGTERM (expected 0):\n{_tail(work)}", file=sys.stderr)
        log.close()


def _tail(work: Path) -> str:
    with contextlib.suppress(OSError):
        return (work / "server.log").read_text(errors="replace")[-3000:]
    return ""


def post(session: requests.Session, url: str, body: dict) -> dict:
    """One request; exits with the server's error body if it is not a 200."""
    response = session.post(url, json=body, timeout=300)
    if response.status_code != 200:
        raise SystemExit(f"error: {url} answered {response.status_code}: {response.text[:1000]}")
    return response.json()


def clients(count: int, url: str, bodies: list[dict]) -> tuple[float, list[dict]]:
    """`count` closed-loop clients (each its own keep-alive session) share `bodies`; wall seconds, responses."""
    todo = list(enumerate(bodies))
    lock = threading.Lock()
    results: list[dict] = [{}] * len(bodies)

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if not todo:
                        return
                    i, body = todo.pop(0)
                results[i] = post(session, url, body)

    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        for future in [pool.submit(client) for _ in range(count)]:
            future.result()
    return time.perf_counter() - start, results


def items(responses: list[dict]) -> list[dict]:
    return [item["diffrun"] for response in responses for item in response["data"]]


def batches(responses: list[dict]) -> dict[str, int]:
    """How many requests ran in micro-batches of each size."""
    return {str(k): v for k, v in sorted(Counter(i.get("batch", 1) for i in items(responses)).items())}


def mean_timing(responses: list[dict], name: str) -> float:
    return round(statistics.mean(i["timings"].get(name, 0.0) for i in items(responses)), 4)


# -- the three measurements -------------------------------------------------------------------------------
def measure_latency(url: str, model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One request against the same pipeline call in process, interleaved, medians."""
    def body(seed: int) -> dict:
        return {"prompt": "a lighthouse at dusk", "size": f"{args.size}x{args.size}", "seed": seed,
                "num_inference_steps": args.steps, "response_format": "b64_json", "output_format": "png"}

    def local(seed: int) -> Image.Image:
        request = pipelines.Request(prompt="a lighthouse at dusk", negative_prompt=None, images={},
                                    args={"num_inference_steps": args.steps, "width": args.size,
                                          "height": args.size}, seed=seed)
        return pipelines.run(model, [request])[0].images[0]

    times: dict[str, list[float]] = {"server": [], "fresh": [], "local": []}
    inference: list[float] = []
    encode: list[float] = []
    with requests.Session() as session:
        first = post(session, url + "/v1/images/generations", body(0))  # warm-up both sides, and the pixels
        mine = local(0)
        theirs = Image.open(io.BytesIO(base64.b64decode(first["data"][0]["b64_json"]))).convert("RGB")
        equal = mine.size == theirs.size and ImageChops.difference(mine.convert("RGB"), theirs).getbbox() is None
        trips = []
        for _ in range(5):  # an idle round trip on the kept-alive connection: what HTTP alone costs
            start = time.perf_counter()
            session.get(url + "/v1/models", timeout=30).raise_for_status()
            trips.append(time.perf_counter() - start)
        for r in range(args.runs):
            seed = r + 1
            for side in ("server", "fresh", "local") if r % 2 == 0 else ("local", "fresh", "server"):
                start = time.perf_counter()
                if side == "local":
                    local(seed)
                elif side == "fresh":  # a new connection per request, as curl does
                    with requests.Session() as once:
                        post(once, url + "/v1/images/generations", body(seed))
                else:  # the kept-alive connection, as the openai client does
                    timings = post(session, url + "/v1/images/generations", body(seed))["data"][0]["diffrun"]["timings"]
                    inference.append(timings["inference"])
                    encode.append(timings.get("encode", 0.0))
                times[side].append(time.perf_counter() - start)
    med = {side: statistics.median(values) for side, values in times.items()}
    return {"server_s": round(med["server"], 4), "in_process_s": round(med["local"], 4),
            "ratio": round(med["server"] / med["local"], 3),
            "new_connection_s": round(med["fresh"], 4), "new_connection_ratio": round(med["fresh"] / med["local"], 3),
            "server_inference_s": round(statistics.median(inference), 4),
            "server_encode_s": round(statistics.median(encode), 4),
            "server_rest_s": round(med["server"] - statistics.median(inference) - statistics.median(encode), 4),
            "runs": args.runs, "pixels_equal": equal, "idle_round_trip_s": round(statistics.median(trips), 4),
            **{f"{side}_range_s": [round(min(v), 3), round(max(v), 3)] for side, v in times.items()}}


def alternate(rounds: int, sides: dict[str, Callable[[int], tuple[float, list[dict]]]]) -> dict[str, list]:
    """Run each side once per round, the order flipped every round; seconds and responses per side."""
    out: dict[str, list] = {name: [] for name in sides}
    names = list(sides)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(sides[name](r))
    return out


def summary(times: dict[str, list], slow: str, fast: str) -> dict[str, Any]:
    """Per-round ratios slow/fast, their median (the figure) and the ratio of the summed seconds."""
    ratios = [a[0] / b[0] for a, b in zip(times[slow], times[fast], strict=True)]
    total = sum(t for t, _ in times[slow]) / sum(t for t, _ in times[fast])
    return {"ratio": round(statistics.median(ratios), 3), "round_ratios": [round(x, 3) for x in ratios],
            "ratio_of_totals": round(total, 3)}


def measure_batching(url: str, model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Requests/s of 8 concurrent clients against the same requests one at a time (same server), and
    for reference the pipeline's own gain from one call of `--max-batch` requests over as many calls."""
    route = url + "/v1/images/generations"

    def bodies(r: int) -> list[dict]:
        return [{"prompt": f"request {i}", "size": f"{args.size}x{args.size}", "seed": 100 * r + i,
                 "num_inference_steps": args.steps} for i in range(args.requests)]

    def local(r: int) -> list[Any]:
        return [pipelines.Request(prompt=f"request {i}", negative_prompt=None, images={}, seed=100 * r + i,
                                  args={"num_inference_steps": args.steps, "width": args.size, "height": args.size})
                for i in range(args.max_batch)]

    def timed(call: Callable[[], object]) -> tuple[float, list[dict]]:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start, []

    times = alternate(args.rounds, {"one": lambda r: clients(1, route, bodies(r)),
                                    "eight": lambda r: clients(8, route, bodies(r))})
    pipe = alternate(args.rounds, {
        "calls": lambda r: timed(lambda: [pipelines.run(model, [q]) for q in local(r)]),
        "batched": lambda r: timed(lambda: pipelines.run(model, local(r)))})
    n = args.requests * args.rounds
    one = [resp for _, rs in times["one"] for resp in rs]
    eight = [resp for _, rs in times["eight"] for resp in rs]
    return {**summary(times, "one", "eight"), "requests": args.requests, "rounds": args.rounds,
            "one_at_a_time_rps": round(n / sum(t for t, _ in times["one"]), 3),
            "concurrent_8_rps": round(n / sum(t for t, _ in times["eight"]), 3),
            "batches_one_at_a_time": batches(one), "batches_concurrent": batches(eight),
            "mean_queue_s_concurrent": mean_timing(eight, "queue"),
            "pipeline_batch_gain": summary(pipe, "calls", "batched")["ratio"]}


def png(i: int, size: int) -> bytes:
    image = Image.new("RGB", (size, size), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def measure_url_inputs(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Image-to-image, 4 concurrent clients: inputs as URLs `--latency` away against inline data: URIs."""
    route = url + "/v1/images/edits"
    images = [png(i, args.size) for i in range(args.requests * args.rounds)]
    datas = ["data:image/png;base64," + base64.b64encode(b).decode("ascii") for b in images]

    def bodies(refs: list[str], r: int) -> list[dict]:
        part = range(r * args.requests, (r + 1) * args.requests)  # fresh inputs every round
        return [{"prompt": f"edit {i}", "image": refs[i], "seed": 200 + i, "num_inference_steps": args.steps,
                 "strength": 0.75} for i in part]

    with LoopbackServer() as loop:
        urls = [loop.add(f"/in{i}.png", body=b, content_type="image/png") for i, b in enumerate(images)]
        loop.add("/warm.png", body=images[0], content_type="image/png")
        clients(1, route, [{**bodies(urls, 0)[0], "image": loop.url("/warm.png")}])  # img2img pipeline, connection
        loop.latency = args.latency
        times = alternate(args.rounds, {"data": lambda r: clients(4, route, bodies(datas, r)),
                                        "url": lambda r: clients(4, route, bodies(urls, r))})
        fetched = sum(loop.count(f"/in{i}.png") for i in range(len(images)))
    remote = [resp for _, rs in times["url"] for resp in rs]
    inline = [resp for _, rs in times["data"] for resp in rs]
    return {**summary(times, "url", "data"), "requests": args.requests, "rounds": args.rounds,
            "latency_s": args.latency, "url_s": round(sum(t for t, _ in times["url"]), 3),
            "data_uri_s": round(sum(t for t, _ in times["data"]), 3), "fetches": fetched,
            "batches_data_uri": batches(inline), "batches_url": batches(remote),
            "mean_inputs_s_url": mean_timing(remote, "inputs"), "mean_queue_s_url": mean_timing(remote, "queue"),
            "mean_queue_s_data_uri": mean_timing(inline, "queue")}


# -- report -----------------------------------------------------------------------------------------------
def verdict(name: str, ratio: float) -> str:
    op, goal = GOALS[name]
    met = ratio <= goal if op == "<=" else ratio >= goal
    return f"goal {op} {goal:.2f}x: {'met' if met else 'MISSED'}"


def table(figures: dict[str, Any], out: Callable[[str], None]) -> None:
    s, lat, bat, url, load = (figures[k] for k in ("settings", "latency", "batching", "url_inputs", "load"))
    out(f"diffrun serve, tiny sd model, {s['size']}x{s['size']}, {s['steps']} steps, CPU, 1 torch thread, "
        f"--max-batch {s['max_batch']}{' (--quick)' if s['quick'] else ''}")
    others = f", other processes used {load['others_cores']} of {load['cpus']} cores" if "others_cores" in load else ""
    out(f"machine: load average {load['loadavg_1min_start']} at start, {load['loadavg_1min_end']} at end{others}")
    out("")
    out("| measurement | diffrun serve | baseline | ratio | goal |")
    out("|---|---|---|---|---|")
    out(f"| 1 request vs the same pipeline call in process (median of {lat['runs']}) | {lat['server_s']:.3f} s | "
        f"{lat['in_process_s']:.3f} s | {lat['ratio']:.2f}x | {verdict('latency', lat['ratio'])} |")
    out(f"| 8 concurrent clients vs one at a time, {bat['rounds']} x {bat['requests']} requests | "
        f"{bat['concurrent_8_rps']:.2f} req/s | {bat['one_at_a_time_rps']:.2f} req/s | {bat['ratio']:.2f}x | "
        f"{verdict('batching', bat['ratio'])} |")
    out(f"| edits, 4 clients: URLs {url['latency_s'] * 1000:.0f} ms away vs data: URIs, {url['rounds']} x "
        f"{url['requests']} | {url['url_s']:.2f} s | {url['data_uri_s']:.2f} s | {url['ratio']:.2f}x | "
        f"{verdict('url_inputs', url['ratio'])} |")
    out("")
    out(f"1: server {lat['server_s']:.3f} s = inference {lat['server_inference_s']:.3f} s + encode "
        f"{lat['server_encode_s'] * 1000:.0f} ms (PNG + recipe) + {lat['server_rest_s'] * 1000:.0f} ms (HTTP, JSON, "
        f"base64, queue); pixels equal to the in-process call: {'yes' if lat['pixels_equal'] else 'NO'}")
    out(f"   a new connection per request (curl's way): {lat['new_connection_s']:.3f} s, "
        f"{lat['new_connection_ratio']:.2f}x; GET /v1/models on the kept-alive connection: "
        f"{lat['idle_round_trip_s'] * 1000:.1f} ms")
    out(f"2: ratio per round {bat['round_ratios']}; micro-batch sizes (size: requests) {bat['batches_concurrent']}; "
        f"the pipeline's own gain from {s['max_batch']} requests in one call: {bat['pipeline_batch_gain']:.2f}x")
    out(f"3: ratio per round {url['round_ratios']}; micro-batch sizes URL {url['batches_url']}, data: URI "
        f"{url['batches_data_uri']}; mean input load {url['mean_inputs_s_url']:.2f} s, mean queue wait URL "
        f"{url['mean_queue_s_url']:.2f} s vs data: URI {url['mean_queue_s_data_uri']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="interleaved latency pairs (default 9)")
    parser.add_argument("--requests", type=int, default=16, help="requests per round in 2 and 3 (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds in 2 and 3 (default 3)")
    parser.add_argument("--steps", type=int, default=16, help="denoising steps (default 16)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the URL inputs are away (default 0.3)")
    parser.add_argument("--max-batch", type=int, default=4, help="the server's --max-batch (default 4)")
    parser.add_argument("--quick", action="store_true", help="smallest run (seconds): checks, not figures")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here ('-': stdout, "
                                                       "the table then goes to stderr)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.requests, args.rounds, args.steps, args.size, args.latency = 1, 4, 1, 2, 32, 0.05

    import torch

    torch.set_num_threads(1)
    meter = LoadMeter()
    with tempfile.TemporaryDirectory(prefix="diffrun-bench-serve-") as tmp:
        work = Path(tmp)
        model_dir = work / "tiny"
        start = time.perf_counter()
        pipelines.make_tiny_model(model_dir, "sd", seed=0)  # what `diffrun tiny-model DIR` writes
        in_process = pipelines.ModelOptions(model=str(model_dir), device="cpu", threads=1)
        with diffrun_server(model_dir, work, args.max_batch, lambda: pipelines.load_model(in_process)) as (url, model):
            setup = time.perf_counter() - start
            latency = measure_latency(url, model, args)
            batching = measure_batching(url, model, args)
            url_inputs = measure_url_inputs(url, args)
        meter.children_cpu = sum(os.times()[2:4])  # the server's, reaped by now
    settings = {k: getattr(args, k) for k in ("size", "steps", "runs", "requests", "rounds", "max_batch", "quick")}
    figures = {"settings": {**settings, "latency_s": args.latency, "torch_threads": torch.get_num_threads(),
                            "setup_s": round(setup, 1)},
               "latency": latency, "batching": batching, "url_inputs": url_inputs, "load": meter.report()}
    figures["goals"] = {name: verdict(name, figures[name]["ratio"]) for name in GOALS}
    to_stderr = args.json == "-"
    table(figures, lambda line: print(line, file=sys.stderr if to_stderr else sys.stdout))
    text = json.dumps(figures, indent=2) + "\n"
    if to_stderr:
        sys.stdout.write(text)
    elif args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
