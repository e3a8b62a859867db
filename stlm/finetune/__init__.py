"""Fine-tuning on text-to-text tasks: summarisation, question answering, classification."""
