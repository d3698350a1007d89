"""Channel transports: how a rendered message leaves the engine."""
