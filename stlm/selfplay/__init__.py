"""Game self-play: one language-model policy plays both seats of a two-player text game (see loop.py)."""
