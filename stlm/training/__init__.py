"""The one training loop and what it needs: runtime, optimizer, checkpoints, logs."""
