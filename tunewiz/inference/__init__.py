"""Using a trained run: load it (``load``), generate (``generate``), evaluate (``evaluate``, through the
lm-eval adapter in ``lm_eval_adapter``)."""
