"""nbody explorer: the Panel dashboard over the engine.

``panel serve explorer`` serves it at /explorer; in Jupyter, ``from explorer import Explorer;
Explorer()`` renders it inline.
"""

from .app import Explorer

__all__ = ["Explorer"]
