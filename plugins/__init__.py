"""benchkit's built-in methods, shipped as ordinary plugins (import name ``benchkit_plugins``).

Each module registers through the ``benchkit`` entry-point group declared in pyproject.toml, exactly
as a third-party package would; the harness never imports them by name.
"""
