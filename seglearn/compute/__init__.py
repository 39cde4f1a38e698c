"""Where the work runs: in this process (``local``) or on a Ray cluster (``ray``).

``get_backend(cfg)`` gives the backend ``compute.backend`` names; ``app.train`` trains its members
through it and ``app.select`` scores the pool through it. See backend.py for the design.
"""

from seglearn.compute.backend import ComputeError, LocalBackend, RayBackend, get_backend

__all__ = ["ComputeError", "LocalBackend", "RayBackend", "get_backend"]
