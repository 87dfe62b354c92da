"""The embedded simulated venue: exchange core, fault profiles and the SimVenue adapter."""

from adapters.sim.faults import FaultProfile
from adapters.sim.faults import FaultProfileError
from adapters.sim.faults import load_profile
from adapters.sim.faults import parse_profile

__all__ = ["FaultProfile", "FaultProfileError", "load_profile", "parse_profile"]
