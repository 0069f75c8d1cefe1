"""OVN-Kubernetes in DPU mode on a lab's kind cluster (the spec's Steps 8-16).

Importing this package pulls in no kubernetes client: `deploy` and `status` load it when used.
"""

from .options import OvnkOptions

__all__ = ["OvnkOptions"]
