"""What a network is trained to do; each objective takes a model, never the reverse.

`base.py` holds the small interface the training step calls (`Objective`,
`WindowObjective`) and `build_objective`; next_token.py, span_corruption.py and
mtp.py (multi-token prediction) hold the losses and their pretraining
objectives; distill.py wraps any of them with a teacher's soft targets.
"""
