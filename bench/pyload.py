"""A small HTTP/1.1 load generator in its own process: the fallback when `wrk` is not installed,
and the loader that sends every request of a file exactly once (`--once`).

Usage: python bench/pyload.py --url http://127.0.0.1:8080 --requests FILE --connections 16
       (--duration SECONDS | --once)
The requests file has one request a line: METHOD <tab> PATH [<tab> JSON BODY], as for
bench/requests.lua. Prints one line, "JSON {...}", with the same fields as the wrk script
(latencies in microseconds). Keep-alive connections, Content-Length bodies only (which is what
uvicorn sends for the responses measured here); uvloop when available.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


def load_requests(path: str, host: str) -> list[bytes]:
    out = []
    with open(path, "rb") as handle:
        for line in handle:
            parts = line.rstrip(b"\n").split(b"\t", 2)
            method, target = parts[0], parts[1]
            body = parts[2] if len(parts) > 2 and parts[2] else b""
            head = (method + b" " + target + b" HTTP/1.1\r\nHost: " + host.encode()
                    + b"\r\nAccept: application/fhir+json\r\n")
            if body:
                head += (b"Content-Type: application/fhir+json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n")
            out.append(head + b"\r\n" + body)
    return out


class Stats:
    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.status_errors = 0
        self.read_errors = 0
        self.connect_errors = 0
        self.bytes = 0
        self.failures: list[str] = []


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> tuple[int, bytes, bool]:
    """Send `request`, read its answer: (status, answer, whether the server keeps the
    connection open)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    keep_alive = True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not supported")
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
    body = await reader.readexactly(length) if length else b""
    return status, head + body, keep_alive


async def _worker(host: str, port: int, requests: list[bytes], next_index: list[int],
                  stop_at: float | None, once: bool, stats: Stats) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        stats.connect_errors += 1
        return
    clock = time.perf_counter_ns
    deadline = None if stop_at is None else int(stop_at * 1e9)
    try:
        while True:
            index = next_index[0]
            if once and index >= len(requests):
                return
            next_index[0] = index + 1
            request = requests[index % len(requests)]
            started = clock()
            if deadline is not None and started >= deadline:
                return
            try:
                status, answer, keep_alive = await _exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                stats.read_errors += 1
                if len(stats.failures) < 10:
                    stats.failures.append(f"{request[:80]!r}: {exc}")
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            stats.latencies.append((clock() - started) // 1000)
            stats.bytes += len(answer)
            if not keep_alive:  # as wrk does: the server's Bundle answers say so (see api.app)
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            if status >= 400:
                stats.status_errors += 1
                if len(stats.failures) < 10:
                    first_line = request.split(b"\r\n", 1)[0]
                    stats.failures.append(f"{first_line!r}: {status} {answer[-300:]!r}")
    finally:
        writer.close()


def percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(q / 100 * len(sorted_values)))]


async def run(url: str, path: str, connections: int, duration: float | None,
              once: bool, offset: int = 0) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = load_requests(path, f"{host}:{port}")
    stats = Stats()
    started = time.perf_counter()
    stop_at = None if duration is None else time.perf_counter() + duration
    next_index = [offset % len(requests) if requests and not once else 0]
    await asyncio.gather(*(_worker(host, port, requests, next_index, stop_at, once, stats)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies = sorted(stats.latencies)
    return {
        "requests": len(latencies), "duration_us": int(elapsed * 1e6), "bytes": stats.bytes,
        "connect_errors": stats.connect_errors, "read_errors": stats.read_errors,
        "write_errors": 0, "status_errors": stats.status_errors, "timeouts": 0,
        "p50_us": percentile(latencies, 50), "p95_us": percentile(latencies, 95),
        "p99_us": percentile(latencies, 99),
        "mean_us": sum(latencies) / len(latencies) if latencies else 0,
        "max_us": latencies[-1] if latencies else 0, "failures": stats.failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--connections", type=int, default=1)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--duration", type=float)
    mode.add_argument("--once", action="store_true")
    parser.add_argument("--offset", type=int, default=0,
                        help="the request to start from (--duration only)")
    args = parser.parse_args()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run(args.url, args.requests, args.connections, args.duration, args.once,
                        args.offset))
    print("JSON " + json.dumps(result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
