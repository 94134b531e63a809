"""`python -m bench.j1_server PORT`: the simulated JupiterOne in its own process, for benchmarks
(its work of applying uploads must not count as monitor's own time). Serves until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from monitor.simulator.jupiterone import SimJupiterOne, serve_jupiterone


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve_jupiterone(SimJupiterOne(), port=port):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
