"""Live I/O and the simulated venue: everything that talks to the world outside the engine."""
