"""An example benchkit plugin (the template for your own)."""

__version__ = "0.1.0"
