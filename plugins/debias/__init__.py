"""Built-in debias strategies: one module each."""
