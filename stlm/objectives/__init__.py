"""What a network is trained to do; each objective takes a model, never the reverse.

`base.py` holds the small interface the training step calls (`Objective`,
`WindowObjective`) and `build_objective`; next_token.py and span_corruption.py
hold the losses and their pretraining objectives.
"""
