"""Planning a run: hardware probe, the memory model, the recommender and the time budget.

Pure functions, no torch at import time: ``hardware`` probes the machine, ``memory`` predicts a run's
peak memory per device, ``recommend`` searches for a configuration that fits, ``request`` turns CLI
flags into a planning request, ``report`` renders a plan, ``runplan`` writes ``plan.json`` for a run,
``time_budget`` turns a wall-clock budget into steps.
"""
