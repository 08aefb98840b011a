"""Tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) from a grid's results."""
