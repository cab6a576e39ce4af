"""In-process fakes of external services (Discord, ...) that speak their real wire protocols."""
