"""Compatibility shim: ``deploy_guard_client`` is now ``deploy_guard.sidecar``.

Kept so that an orchestrator already switched to the first client keeps working
after upgrading (same names, same behaviour: a ``deploy-guard serve`` child). New
code imports :mod:`deploy_guard` (in-process) or :mod:`deploy_guard.sidecar`.
One difference: ``decide_full`` returns a :class:`deploy_guard.Decision`, which
reads like the earlier dict (``d["verdict"]``, ``d.get("rule")``) and has
``as_dict()``.
"""
from deploy_guard.sidecar import *  # noqa: F401,F403
from deploy_guard.sidecar import __all__  # noqa: F401
