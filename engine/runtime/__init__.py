"""Running the engine: the CLI, configuration, the composition root and its drivers."""
