"""Stream agents: one unit of stream logic per module."""
