"""notify-pipeline: the Faust app, settings, topology, CLI and embedded stack."""
