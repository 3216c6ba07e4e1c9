"""Text: tokenizers (SentencePiece and ``tokenizer.json``) and chat templates."""
