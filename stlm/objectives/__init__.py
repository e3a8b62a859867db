"""What a network is trained to do; each objective takes a model, never the reverse."""
