"""Loopback emulators of the providers, speaking their protocols, with fault knobs."""
