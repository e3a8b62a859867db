"""Bridges to outside tools (lm-evaluation-harness). Each module imports its tool itself."""
