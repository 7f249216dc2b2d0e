"""Scale-out on Ray Serve: the same catalogue and HTTP app across processes and machines.

The only package that imports ray, and only in ``ray_app`` and ``remote`` (``ray_config``
builds plain dicts, so ``embedserve ray-config`` works without ray installed):

- ``ray_config``: each model's deployment options from its ``ray:`` block, and the Serve
  config that ``embedserve ray-config`` prints for ``serve deploy``;
- ``remote``: the ingress side: a :class:`~embedserve.registry.Registry` whose handles reach
  the model deployments through Ray handles instead of loading models;
- ``ray_app``: the deployments (one per model, and the HTTP ingress), the application builder
  that Serve configs import, and ``embedserve serve --ray``.
"""

from __future__ import annotations

import os

# Read by ray when it is imported, so set before: see :func:`local_cluster_env`.
LOCAL_CLUSTER_ENV = {
    # no usage report leaves the machine
    "RAY_USAGE_STATS_ENABLED": "0",
    # a cluster of one process tree on the loopback interface: no token to hand around
    "RAY_AUTH_MODE": "disabled",
    # the node's address is 127.0.0.1 (as on macOS), so Ray's own servers listen on loopback only
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def local_cluster_env() -> None:
    """Environment for a local single-machine cluster (unless already set); call before importing ray."""
    for name, value in LOCAL_CLUSTER_ENV.items():
        os.environ.setdefault(name, value)
