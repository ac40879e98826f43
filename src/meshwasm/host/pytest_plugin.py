"""pytest fixtures for plugin authors (installed with the package as the `meshwasm` pytest plugin)."""
