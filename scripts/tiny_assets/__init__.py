"""Generator of the shipped tiny model and sample datasets (`scripts/make_tiny_assets.py`).

Never imported by the CLI: it trains a tokenizer and, for the weights, runs `tunewiz train`.
"""
