"""Evaluation: validation / zero-shot NELBO and perplexity, generation quality."""
