"""Run as a script: fork children (as `subprocess` does to run a command as
another user) while a gRPC server and clients are busy in other threads, and
print how many of them died by a signal before running. It imports
sealtrail_server before grpc, as the server does (test_fork_safety.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading

import sealtrail_server  # noqa: F401  (first: it decides gRPC's fork support)

# isort: split
import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def _serve(port: list[int], ready: threading.Event) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def main(forks: int) -> None:
    port: list[int] = []
    ready = threading.Event()
    threading.Thread(target=_serve, args=(port, ready), daemon=True).start()
    ready.wait(10)
    done = threading.Event()

    def call() -> None:
        check = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port[0]}")).Check
        while not done.is_set():
            check(health_pb2.HealthCheckRequest(), timeout=10)

    callers = [threading.Thread(target=call, daemon=True) for _ in range(3)]
    for caller in callers:
        caller.start()
    killed = 0
    for _ in range(forks):
        # `user` makes subprocess fork() rather than vfork(): pthread_atfork
        # handlers then run in the child, as when pgserver runs pg_ctl as its user.
        ran = subprocess.run(["true"], user=os.getuid(), check=False)
        killed += ran.returncode < 0 and ran.returncode != -signal.SIGINT
    done.set()
    print(killed)
    sys.stdout.flush()
    os._exit(0)  # the server's loop and the callers need no goodbye


if __name__ == "__main__":
    main(int(sys.argv[1]))
