"""The simulated venue as a loopback server speaking Nado's gateway protocol.

`dnpair venue serve` runs `serve(ServerOptions(...))`; tests start a `VenueServer` on
port 0 inside their own event loop. See adapters/sim/README.md ("The server face").
"""

from __future__ import annotations

from adapters.sim.server.app import SIM_CHAIN_ID
from adapters.sim.server.app import SIM_ENDPOINT
from adapters.sim.server.app import ServerOptions
from adapters.sim.server.app import VenueServer
from adapters.sim.server.app import gateway_url
from adapters.sim.server.app import serve

__all__ = ["SIM_CHAIN_ID", "SIM_ENDPOINT", "ServerOptions", "VenueServer", "gateway_url", "serve"]
