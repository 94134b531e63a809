"""The private redis-server processes the suite starts: ports a cluster node can use."""

from __future__ import annotations

import socket

from monitor.simulator.redis_process import CLUSTER_BUS_OFFSET, HIGHEST_CLUSTER_PORT, free_cluster_port


def test_a_cluster_node_gets_a_port_whose_bus_port_exists_and_is_free() -> None:
    """Redis refuses a cluster node a port above 55,535 (its bus listens 10,000 higher); about a fifth
    of the kernel's ephemeral ports are above it, so 300 picks without the limit would hold some."""
    ports = [free_cluster_port() for _ in range(300)]
    assert max(ports) <= HIGHEST_CLUSTER_PORT
    for port in ports[:20]:
        with socket.socket() as node, socket.socket() as bus:
            node.bind(("127.0.0.1", port))
            bus.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
