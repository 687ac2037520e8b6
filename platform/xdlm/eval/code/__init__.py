"""Code evaluation: MBPP / HumanEval problems, the paper's prompts, a sandboxed executor, pass@1."""
