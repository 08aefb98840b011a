"""Built-in backbones: one module each."""
