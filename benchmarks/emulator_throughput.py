"""How many small generateContent requests per second the Gemini emulator answers.

The emulator runs in its own process (as `dealscout emulator` does); the load
comes from client processes, each holding many keep-alive connections and
writing raw HTTP/1.1 (an HTTP client library would be the bottleneck, not the
emulator). Each request is a real generateContent body with a short text prompt;
each answer is a full Gemini response (candidates, usage, ids).

    python benchmarks/emulator_throughput.py                 # 5 s, 1 client process, 64 conns
    python benchmarks/emulator_throughput.py --seconds 10 --clients 2 --connections 128
    python benchmarks/emulator_throughput.py --json          # schema-constrained answers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL = "gemini-2.5-flash"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_server(port: int) -> None:
    from dealscout_cli.emulator import EmulatorConfig, serve

    serve(EmulatorConfig(seed=1), port=port)


def request_bytes(port: int, structured: bool) -> bytes:
    prompt = "Price a used Sony WH-1000XM4."
    body: dict = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if structured:
        body["generationConfig"] = {
            "responseMimeType": "application/json",
            "responseSchema": {
                "type": "OBJECT",
                "properties": {
                    "low": {"type": "NUMBER"},
                    "suggested": {"type": "NUMBER"},
                    "high": {"type": "NUMBER"},
                    "currency": {"type": "STRING"},
                },
            },
        }
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1beta/models/{MODEL}:generateContent HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nx-goog-api-key: bench\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def one_connection(port: int, request: bytes, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            counts[0 if status == 200 else 1] += 1
    finally:
        writer.close()
        await writer.wait_closed()


def run_client(
    port: int, connections: int, seconds: float, structured: bool, results: multiprocessing.Queue
) -> None:
    import uvloop

    async def main() -> list[int]:
        counts = [0, 0]
        stop_at = time.perf_counter() + seconds
        request = request_bytes(port, structured)
        await asyncio.gather(
            *(one_connection(port, request, stop_at, counts) for _ in range(connections))
        )
        return counts

    results.put(uvloop.run(main()))


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"emulator did not start on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=1, help="load-generating processes")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections in all")
    parser.add_argument("--json", action="store_true", help="ask for schema-constrained JSON")
    args = parser.parse_args()

    port = free_port()
    server = multiprocessing.Process(target=run_server, args=(port,), daemon=True)
    server.start()
    try:
        wait_for_port(port)
        results: multiprocessing.Queue = multiprocessing.Queue()
        per_client = max(1, args.connections // args.clients)
        clients = [
            multiprocessing.Process(
                target=run_client, args=(port, per_client, args.seconds, args.json, results)
            )
            for _ in range(args.clients)
        ]
        started = time.perf_counter()
        for client in clients:
            client.start()
        totals = [0, 0]
        for _ in clients:
            ok, other = results.get(timeout=args.seconds + 60)
            totals[0] += ok
            totals[1] += other
        for client in clients:
            client.join()
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.join()
    kind = "schema JSON" if args.json else "plain text"
    print(
        f"{totals[0] / elapsed:,.0f} req/s ({totals[0]:,} answered 200, {totals[1]} other, "
        f"{kind}, {args.clients} client process(es), {per_client * args.clients} connections, "
        f"{elapsed:.1f} s)"
    )


if __name__ == "__main__":
    main()
