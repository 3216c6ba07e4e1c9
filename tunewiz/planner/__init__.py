"""The planner: pure functions (no torch) that predict a run's peak memory per device and search for
a configuration that fits. ``memory`` is the memory model; ``recommend`` the search."""
