#!/usr/bin/env python3
"""A logging TCP proxy for comparing two clients' HTTP/1.1 request streams (issue #7).

    bench/httpcapture.py --listen PORT --upstream HOST:PORT --out DIR     # run, Ctrl-C to stop
    bench/httpcapture.py --summarize DIR [--show 2]                       # what was sent

While running, every accepted connection gets its own file in DIR with the bytes the
client sent (`conn-0001.req`) and the server's answers (`conn-0001.resp`), each
receive recorded with its size (`conn-0001.reads`, one line per `recv`: how the
client's writes arrived, as far as a proxy can tell). `--summarize` parses the
request files: connections, requests per connection, methods, request-line shapes,
every header name with how many distinct values it had, body sizes, and `--show N`
prints the first N requests' heads verbatim, so two captures can be diffed.

stdlib only; the proxy adds a hop, so time nothing through it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import glob
import os
import re
import sys


async def pipe(reader, writer, sink, reads=None):
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            sink.write(data)
            if reads is not None:
                reads.write(f"{len(data)}\n")
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def serve(a):
    os.makedirs(a.out, exist_ok=True)
    host, port = a.upstream.rsplit(":", 1)
    counter = 0

    async def handle(cr, cw):
        nonlocal counter
        counter += 1
        base = os.path.join(a.out, f"conn-{counter:04d}")
        sr, sw = await asyncio.open_connection(host, int(port))
        with open(base + ".req", "wb") as req, open(base + ".resp", "wb") as resp, open(base + ".reads", "w") as rd:
            await asyncio.gather(pipe(cr, sw, req, rd), pipe(sr, cw, resp))

    server = await asyncio.start_server(handle, "127.0.0.1", a.listen)
    print(f"listening on 127.0.0.1:{a.listen} -> {a.upstream}, writing {a.out}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def parse_requests(data: bytes):
    """(request line, [(name, value)], body length) for each request in a client stream."""
    out, pos = [], 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = data[pos:end].decode("latin-1").split("\r\n")
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        pos = end + 4
        length = 0
        chunked = False
        for name, value in headers:
            if name.lower() == "content-length":
                length = int(value)
            if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            length = 0
            while True:
                eol = data.find(b"\r\n", pos)
                size = int(data[pos:eol].split(b";")[0], 16)
                pos = eol + 2 + size + 2
                length += size
                if size == 0:
                    break
        else:
            pos += length
        out.append((lines[0], headers, length, chunked))
    return out


def summarize(a):
    files = sorted(glob.glob(os.path.join(a.summarize, "conn-*.req")))
    per_conn, methods, shapes = [], collections.Counter(), collections.Counter()
    names = collections.defaultdict(set)
    order = collections.Counter()
    sizes, chunked, reads_per_req = [], 0, []
    shown = 0
    for f in files:
        with open(f, "rb") as fh:
            reqs = parse_requests(fh.read())
        per_conn.append(len(reqs))
        reads_file = f[:-4] + ".reads"
        if reqs and os.path.exists(reads_file):
            with open(reads_file) as rf:
                reads_per_req.append(sum(1 for _ in rf) / len(reqs))
        for line, headers, length, ch in reqs:
            method = line.split(" ", 1)[0]
            methods[method] += 1
            shapes[re.sub(r"/[^/ ?]+", "/…", line.split(" ")[1].split("?")[0]) + (" ?" + "&".join(
                sorted(p.split("=")[0] for p in line.split(" ")[1].split("?", 1)[1].split("&")))
                if "?" in line else "") + " " + line.rsplit(" ", 1)[-1]] += 1
            order[tuple(n.lower() for n, _ in headers)] += 1
            for n, v in headers:
                names[n.lower()].add(v)
            sizes.append(length)
            chunked += ch
            if shown < a.show:
                print(line)
                for n, v in headers:
                    print(f"{n}: {v}")
                print(f"<body {length} bytes{' chunked' if ch else ''}>\n")
                shown += 1
    total = sum(per_conn)
    print(f"connections: {len(files)}, requests: {total}, per connection: "
          f"min {min(per_conn, default=0)} max {max(per_conn, default=0)}")
    if reads_per_req:
        print(f"proxy reads per request (mean over connections): {sum(reads_per_req) / len(reads_per_req):.2f}")
    print("methods:", dict(methods))
    for s, c in shapes.most_common():
        print(f"  {c:6d}  {s}")
    print("header orders:")
    for o, c in order.most_common():
        print(f"  {c:6d}  {', '.join(o)}")
    print("headers (distinct values):")
    for n in sorted(names):
        vals = names[n]
        sample = next(iter(vals))
        print(f"  {n}: {len(vals)} distinct, e.g. {sample[:80]!r}")
    if sizes:
        print(f"bodies: {len(sizes)}, total {sum(sizes)} bytes, min {min(sizes)} max {max(sizes)}, chunked {chunked}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int)
    ap.add_argument("--upstream")
    ap.add_argument("--out")
    ap.add_argument("--summarize")
    ap.add_argument("--show", type=int, default=0)
    a = ap.parse_args()
    if a.summarize:
        summarize(a)
    else:
        try:
            asyncio.run(serve(a))
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
