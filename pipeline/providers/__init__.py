"""Provider clients: one module per provider, each on its real protocol."""
