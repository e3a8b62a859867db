"""Training: one step (step.py) shared by the pretraining loop (loop.py) and fine-tuning,
with the optimizer and schedule, parallelism, speed accounting, logs and plots."""
