"""deploy-guard for the Python orchestrator: the deploy-status guard as a sandboxed
WebAssembly policy, decided in this process.

The one-line switch in the three deploy-phase setters::

    # before
    from .deploy_status_guard import decide, ALLOW, CONVERGE_DONE, SUPPRESS, MONITORING
    # after
    from deploy_guard import decide, ALLOW, CONVERGE_DONE, SUPPRESS, MONITORING

Two transports, one API:

* :class:`Guard` decides in this process (the host library as an extension module):
  ``Guard(db=None, policy=None, *, config=None, watch=True, **settings)`` with
  ``decide``, ``decide_full``, ``monitor_tick``, ``policy``, ``watch()``, ``close()``.
* :class:`deploy_guard.sidecar.Client` asks a ``deploy-guard serve`` child process,
  for those who want a process boundary.

The monitor's guard (the seed's D4): ``monitor_tick(work_item_id, reason=None)`` in
``run_post_deploy_monitor`` answers :data:`PROCEED`, or :data:`NOOP` for a task
cancelled during its window (no status PATCH, no re-queue).

The module-level :func:`decide`, :func:`decide_full` and :func:`monitor_tick` use a default :class:`Guard`,
made on first use from the environment (``DEPLOY_GUARD_DB``, ``DEPLOY_GUARD_POLICY``,
``DEPLOY_GUARD_CONFIG``, ...) exactly as the host reads it, and watching the policy
and config files. No call raises: whatever fails is ALLOW with rule ``fail-safe`` and
the cause in ``error``. The decision line goes to the logger
``orchestrator.deploy_status_guard`` (INFO for ALLOW, WARNING otherwise).
"""
from __future__ import annotations

import atexit
import logging
import os

from ._native import (
    Decision,
    Guard,
    Policy,
    after_fork_in_child as _after_fork_in_child,
    after_fork_in_parent as _after_fork_in_parent,
    before_fork as _before_fork,
    decide,
    decide_full,
    default_guard,
    monitor_tick,
)

__all__ = [
    "ALLOW",
    "CONVERGE_DONE",
    "SUPPRESS",
    "PROCEED",
    "NOOP",
    "AWAITING",
    "DEPLOYING",
    "MONITORING",
    "VERDICTS",
    "TICK_VERDICTS",
    "TARGETS",
    "Decision",
    "Guard",
    "Policy",
    "decide",
    "decide_full",
    "monitor_tick",
    "default_guard",
]

__version__ = "0.1.0"

# Verdicts returned by decide() (the setter executes them): the original's values.
ALLOW = "ALLOW"
CONVERGE_DONE = "CONVERGE_DONE"
SUPPRESS = "SUPPRESS"

# Verdicts returned by monitor_tick() (the seed's D4, run_post_deploy_monitor's guard).
PROCEED = "PROCEED"  # the monitor acts: it PATCHes the status and re-queues its tick
NOOP = "NOOP"  # a zombie tick (the task was cancelled mid-window): no PATCH, no re-queue

# Deploy-phase target tokens (one per guarded setter): the original's values.
AWAITING = "awaiting"
DEPLOYING = "deploying"
MONITORING = "monitoring"

VERDICTS = frozenset((ALLOW, CONVERGE_DONE, SUPPRESS))
TICK_VERDICTS = frozenset((PROCEED, NOOP))
TARGETS = frozenset((AWAITING, DEPLOYING, MONITORING))

# A library does not print by itself: the decision lines reach the orchestrator's
# own handlers (through propagation), nothing else.
logging.getLogger("orchestrator.deploy_status_guard").addHandler(logging.NullHandler())
# The host library's own lines (policy swapped or refused, configuration reloaded)
# go to the loggers deploy_guard.policy, deploy_guard.config, ...: the same rule.
logging.getLogger("deploy_guard").addHandler(logging.NullHandler())

# Threads do not survive fork(): every Guard lets its running decisions finish and
# stops its threads before, and makes them again after, in the parent and the child
# (the epoch ticker that enforces deadlines, the file watcher, the ledger writer).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _close_default_guard() -> None:
    # Commit the default guard's ledger and stop its watcher before the interpreter
    # goes away; only if it was ever made.
    try:
        from . import _native

        if _native.default_guard_made():
            default_guard().close()
    except Exception:  # noqa: BLE001 - exit must not raise
        pass


atexit.register(_close_default_guard)
