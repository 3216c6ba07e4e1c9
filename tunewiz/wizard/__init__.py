"""``tunewiz init``: the questions (``flow``), the dataset step and the answer source (``asker``)."""
