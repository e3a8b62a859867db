"""Model families. Each is a config dataclass, a model and its named presets;
`stlm.registry` maps preset names to them. Model code depends only on torch."""
