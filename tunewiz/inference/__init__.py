"""Using a trained run: load it (``load``), generate (``generate``), evaluate (``evaluate``)."""
