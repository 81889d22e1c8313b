"""The core: domain, services and secrets, with no Qt imports."""
