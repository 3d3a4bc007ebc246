"""nbody explorer: the Panel dashboard over the engine.

``nbody-explorer`` (``panel serve explorer`` on 127.0.0.1) serves it at /explorer; in Jupyter,
``from explorer import Explorer; Explorer()`` renders it inline.
"""

from .app import Explorer

__all__ = ["Explorer"]
