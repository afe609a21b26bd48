"""Load check of `kqv serve`: N attention requests at once against the same N one after another.

The server runs on a thread of this process, on a free localhost port; the requests go through
real HTTP (the standard library's http.client), each on its own thread, released together by a
barrier. Every answer must be 200 and equal to the one a single request gets. The reference is
the same requests sent one at a time in the same run, so the ratio says what concurrency costs
or gains on this machine (the model takes turns on a lock; JSON and HTTP overlap).
"""

import http.client
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from kqv.serve.app import create_app
from kqv.serve.server import serving_in_background


@dataclass
class LoadResult:
    model: str
    text: str
    concurrency: int
    response_bytes: int
    errors: int  # answers that were not 200, or differed from the single request's
    error_examples: list[str]
    sequential_ms: list[float]  # latency of each request sent alone
    concurrent_ms: list[float]  # latency of each request sent together, from the release
    sequential_wall_s: float
    concurrent_wall_s: float

    def summary(self) -> dict:
        def stats(ms):
            ordered = sorted(ms)
            return {
                "p50_ms": round(statistics.median(ordered), 1),
                "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
                "max_ms": round(ordered[-1], 1),
            }

        seq_rps = len(self.sequential_ms) / self.sequential_wall_s
        con_rps = len(self.concurrent_ms) / self.concurrent_wall_s
        return {
            "sequential": {**stats(self.sequential_ms), "requests_per_s": round(seq_rps, 1)},
            "concurrent": {**stats(self.concurrent_ms), "requests_per_s": round(con_rps, 1)},
            "throughput_ratio": round(con_rps / seq_rps, 2),
        }

    def to_dict(self) -> dict:
        return {**asdict(self), **self.summary()}


def _post(base: str, path: str, body: dict) -> tuple[int, bytes, float]:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    start = time.perf_counter()
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        return response.status, data, (time.perf_counter() - start) * 1e3
    finally:
        connection.close()


def load_check(explorers, text: str, concurrency: int = 32, model: str | None = None) -> LoadResult:
    """Serve `explorers`, then send `concurrency` attention requests for `text` one by one, then all at once."""
    model = model or explorers[0].id
    body = {"model": model, "text": text}
    with serving_in_background(create_app(explorers)) as base:
        status, expected, _ = _post(base, "/api/attention", body)  # warm-up, and the answer every request must give
        if status != 200:
            raise RuntimeError(f"the first request failed ({status}): {expected[:200]!r}")
        sequential, start = [], time.perf_counter()
        for _ in range(concurrency):
            sequential.append(_post(base, "/api/attention", body))
        sequential_wall = time.perf_counter() - start

        barrier = threading.Barrier(concurrency + 1)
        concurrent: list = [None] * concurrency

        def one(i):
            barrier.wait()
            try:
                concurrent[i] = _post(base, "/api/attention", body)
            except OSError as exc:
                concurrent[i] = (0, repr(exc).encode(), float("nan"))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrency)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        concurrent_wall = time.perf_counter() - start

    bad = [(s, d) for s, d, _ in sequential + concurrent if s != 200 or d != expected]
    return LoadResult(
        model=model,
        text=text,
        concurrency=concurrency,
        response_bytes=len(expected),
        errors=len(bad),
        error_examples=[f"{s}: {d[:160].decode(errors='replace')}" for s, d in bad[:3]],
        sequential_ms=[ms for _, _, ms in sequential],
        concurrent_ms=[ms for _, _, ms in concurrent],
        sequential_wall_s=sequential_wall,
        concurrent_wall_s=concurrent_wall,
    )
