"""Training: the torchrun launcher (parent side) and what runs inside each rank.

``launcher`` builds torchrun's argv and owns the run's terminal; ``recipe`` is the training loop run by
every rank (``python -m tunewiz.train.recipe``); ``distributed``, ``optim``, ``batch_shape``,
``checkpoint``, ``resume``, ``export``, ``faults`` and ``peak_memory`` are its collaborators.
"""
