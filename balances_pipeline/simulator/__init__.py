"""The bundled EHR simulator: a seeded Open Dental practice served over loopback HTTP."""

from balances_pipeline.simulator.faults import Faults
from balances_pipeline.simulator.server import SimPractice, SimulatorServer

__all__ = ["Faults", "SimPractice", "SimulatorServer"]
