"""Memory of a real ``coopasd gateway`` (uvicorn, TLS) when a client POSTs one oversized Fleet call:
the gateway's resident memory before, after and at peak, for a declared ``Content-Length`` and for a
chunked body. Nothing listens at the SuperLink address (a body that got through would be answered 502).

    .venv/bin/python benchmarks/gateway_memory.py [--mb 200] [--src OTHER_CHECKOUT/src]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coopasd.federation.tls import generate_certificates


def _mib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _post(port: int, ca: Path, mb: int, chunked: bool) -> str:
    """Send ``mb`` MiB to /v1/fleet/push-object; the reply's status, or how the upload ended."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(cafile=str(ca)))
    chunk = b"\0" * (1 << 20)
    try:
        conn.putrequest("POST", "/v1/fleet/push-object")
        conn.putheader("Content-Type", "application/protobuf")
        conn.putheader(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(mb << 20))))
        conn.endheaders()
        for _ in range(mb):
            conn.send(b"100000\r\n" + chunk + b"\r\n" if chunked else chunk)
        if chunked:
            conn.send(b"0\r\n\r\n")
        return str(conn.getresponse().status)
    except OSError as err:
        return f"connection closed mid-upload ({type(err).__name__})"
    finally:
        conn.close()


def measure(src: Path, certs: Path, mb: int, chunked: bool) -> dict:
    port = 19_000 + os.getpid() % 1000
    command = [sys.executable, "-c", "from coopasd.cli.app import main; main()", "gateway", "--certs", str(certs)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--superlink", "127.0.0.1:1"]
    env = os.environ | {"PYTHONPATH": str(src)}
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        before = _mib(proc.pid, "VmRSS:")
        status = _post(port, certs / "ca.crt", mb, chunked)
        time.sleep(1)
        return {"status": status, "before": before, "after": _mib(proc.pid, "VmRSS:"), "peak": _mib(proc.pid, "VmHWM:")}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="body size in MiB")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    args = parser.parse_args()
    table = Table(title=f"coopasd gateway, one {args.mb} MiB POST /v1/fleet/push-object ({args.src})")
    for name in ("body", "status", "RSS before MiB", "RSS after MiB", "peak RSS MiB"):
        table.add_column(name)
    with tempfile.TemporaryDirectory() as tmp:
        generate_certificates(Path(tmp))
        for chunked in (False, True):
            r = measure(args.src, Path(tmp), args.mb, chunked)
            kind = "chunked" if chunked else "Content-Length"
            table.add_row(kind, r["status"], str(r["before"]), str(r["after"]), str(r["peak"]))
    Console().print(table)


if __name__ == "__main__":
    main()
