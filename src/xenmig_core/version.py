"""xenmig's version, in a module of its own so that any module can import it cheaply
(importing it from the package would make the package's lazy API an import cycle)."""

__version__ = "0.1.0"
