"""The sidecar transport: ``deploy_guard.sidecar.Client`` asks a ``deploy-guard serve``
child process, with the same API as the in-process :class:`deploy_guard.Guard`.

For those who want a process boundary between the orchestrator and the host (a
crash or a leak in the host cannot take the orchestrator down; the host can run as
another user). In-process (:class:`deploy_guard.Guard`) is faster and has no second
process to supervise; see the README's "Embedding in the Python orchestrator".

The client starts ``deploy-guard serve`` as a supervised child, writes one JSON
request per line on its stdin and reads one JSON decision per line from its stdout,
**on the calling thread**: it waits for the answer with ``poll`` on the pipe and a
deadline, not through a reader thread and a queue (each hand-over between threads
waited for the GIL: milliseconds of tail latency).

never-raise contract (as the original's): whatever goes wrong on the client side -
the binary is missing, the child dies, hangs past the timeout, answers something
that is not a decision - the verdict is ALLOW (fail-safe), the cause is logged at
WARNING on ``orchestrator.deploy_status_guard``, a hung or confused child is killed,
and the next call starts a fresh one. Decisions are read-only, so a request is
retried once on a fresh child when the old one turned out to be dead before it
answered.

The child inherits the process environment (the host's settings). This client reads
``DEPLOY_GUARD_BIN`` (the binary; else ``deploy-guard`` on ``PATH``) and
``DEPLOY_GUARD_CLIENT_TIMEOUT`` (seconds, for the default client).
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from ._native import FIELDS as _FIELDS  # the decision object's fields, the host's list
from ._native import Decision
from ._native import escaped as _escaped  # a field of a line, as the decision line writes it
from ._native import log_decision as _native_log_decision  # the one decision line

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
    "DEFAULT_TIMEOUT",
    "Client",
    "Decision",
    "decide",
    "decide_full",
    "monitor_tick",
    "get_default_client",
    "close_default_client",
]

logger = logging.getLogger("orchestrator.deploy_status_guard")
_child_logger = logging.getLogger("orchestrator.deploy_status_guard.child")
# A library does not print by itself: records reach whatever handlers the
# orchestrator configured (the root's, through propagation), nothing else.
logger.addHandler(logging.NullHandler())

# Verdicts returned by decide() (the setter executes them) - same values as the seed.
ALLOW = "ALLOW"  # PATCH the requested deploy-phase status (normal path).
CONVERGE_DONE = "CONVERGE_DONE"  # set_issue_done instead (idempotent convergence).
SUPPRESS = "SUPPRESS"  # do nothing (do not stamp over a `cancelled` terminal).

# Deploy-phase target tokens (one per guarded setter) - same values as the seed.
AWAITING = "awaiting"
DEPLOYING = "deploying"
MONITORING = "monitoring"

# Verdicts returned by monitor_tick() (the seed's D4): the monitor acts, or does nothing.
PROCEED = "PROCEED"  # PATCH the monitoring status and re-queue the next tick.
NOOP = "NOOP"  # a zombie tick: the task was cancelled mid-window; no PATCH, no re-queue.

VERDICTS = frozenset((ALLOW, CONVERGE_DONE, SUPPRESS))
TICK_VERDICTS = frozenset((PROCEED, NOOP))
TARGETS = frozenset((AWAITING, DEPLOYING, MONITORING))

#: Default budget of one call, in seconds: lock wait, child start, write and answer.
DEFAULT_TIMEOUT = 2.0

ENV_BIN = "DEPLOY_GUARD_BIN"
ENV_CLIENT_TIMEOUT = "DEPLOY_GUARD_CLIENT_TIMEOUT"
DEFAULT_BINARY_NAME = "deploy-guard"

# `deploy-guard serve` answers {"error": ...} to a request line longer than this
# (newline excluded); such a request is answered ALLOW here without sending it.
_MAX_REQUEST_BYTES = 65536
# An answer line longer than this is garbage (a real decision is well under 2 KiB
# plus the echoed work item and caller, each bounded by the request limit).
_MAX_ANSWER_BYTES = 4 * _MAX_REQUEST_BYTES
# Restart back-off after consecutive failures (seconds): none after the first
# failure, then 0.25, 0.5, 1, 2, 4, 5, 5, ...
_BACKOFF_BASE = 0.25
_BACKOFF_MAX = 5.0

_EOF = object()  # the child's stdout reached end of file
_OVERLONG = object()  # the child wrote an answer line longer than _MAX_ANSWER_BYTES
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _failsafe(work_item: Any, caller: Any, target: Any, error: str, tick: bool = False) -> Decision:
    """A decision made on the client side: ALLOW (PROCEED for a tick), rule ``fail-safe``."""
    return Decision(
        work_item=work_item,
        caller=caller,
        target=None if tick else target,
        db_stage=None,
        window_active=None,
        verdict=PROCEED if tick else ALLOW,
        rule="fail-safe",
        policy=None,
        policy_digest=None,
        error="client: " + error,
    )


class _ProtocolError(Exception):
    """The child broke the protocol; ``kill`` says whether it must be replaced."""

    def __init__(self, message: str, kill: bool = True, retry: bool = False) -> None:
        super().__init__(message)
        self.kill = kill
        self.retry = retry


class _Child:
    """One running ``deploy-guard serve``; its answers are read by the caller."""

    def __init__(self, argv: List[str], env: Optional[Mapping[str, str]], stderr: Any) -> None:
        if stderr == "log":
            stderr_arg: Any = subprocess.PIPE
        else:
            stderr_arg = stderr  # None: inherit the parent's stderr
        self.owner_pid = os.getpid()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_arg,
            env=None if env is None else dict(env),
            close_fds=True,
            # Own process group: a Ctrl-C at the orchestrator's terminal does not
            # kill the guard under it, and a kill reaches a wrapper script's children.
            start_new_session=True,
        )
        self.pid = self.proc.pid
        # Read and written through the raw descriptors (os.read/os.write), never through
        # the file objects' buffers, so that poll() sees everything there is to read.
        self.stdout_fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        self.poller = select.poll()
        self.poller.register(self.stdout_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.buffer = bytearray()
        self.eof = False
        if stderr == "log":
            drain = threading.Thread(
                target=self._drain_stderr, name="deploy-guard-stderr-%d" % self.pid, daemon=True
            )
            drain.start()

    def _fill(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for output and read what is there; False on nothing."""
        if self.eof:
            return False
        if not self.poller.poll(max(0, timeout_ms)):
            return False
        chunk = os.read(self.stdout_fd, 1 << 16)
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def take_line(self) -> Any:
        """A complete line from the buffer, ``_OVERLONG``, or None."""
        end = self.buffer.find(b"\n")
        if end >= 0:
            line = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            return line
        if len(self.buffer) > _MAX_ANSWER_BYTES:
            return _OVERLONG
        return None

    def pending(self) -> List[Any]:
        """Lines the child wrote that nobody asked for (read without waiting)."""
        while len(self.buffer) <= _MAX_ANSWER_BYTES and self._fill(0):
            pass
        lines = []
        while True:
            line = self.take_line()
            if line is None:
                break
            lines.append(line)
            if line is _OVERLONG:
                break
        if self.eof and not self.buffer and not lines:
            lines.append(_EOF)
        return lines

    def read_answer(self, deadline: float) -> Any:
        """The next line, ``_EOF``, ``_OVERLONG``, or None when the deadline passed."""
        spin_until = time.perf_counter() + _SPIN_SECONDS
        spin = True
        while True:
            line = self.take_line()
            if line is not None:
                return line
            if self.eof:
                return _EOF
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if spin and self._fill(0):
                continue
            spin = spin and time.perf_counter() < spin_until
            if not spin:
                self._fill(int(remaining * 1000) + 1)

    def _drain_stderr(self) -> None:
        err = self.proc.stderr
        try:
            for raw in iter(err.readline, b""):  # type: ignore[union-attr]
                try:
                    text = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
                    if text:
                        _child_logger.debug("[deploy-guard %d] %s", self.pid, text)
                except Exception:  # noqa: BLE001 - draining must go on
                    pass
        except Exception:  # noqa: BLE001
            pass
        finally:
            try:
                err.close()  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001
                pass

    def alive(self) -> bool:
        return not self.eof and self.proc.poll() is None

    def write(self, data: bytes) -> None:
        stdin = self.proc.stdin
        if stdin is None:
            raise ValueError("stdin is closed")
        view = memoryview(data)
        while view:
            view = view[os.write(stdin.fileno(), view):]

    def kill(self) -> None:
        """SIGKILL the child (and its process group) and reap it if it goes quickly."""
        try:
            if self.proc.poll() is None:
                try:
                    # Safe: the leader is not reaped, so its pid (= pgid) is not reused.
                    os.killpg(self.pid, signal.SIGKILL)
                except OSError:
                    self.proc.kill()
        except Exception:  # noqa: BLE001
            pass
        self._close_pipes()
        try:
            self.proc.wait(timeout=0.5)
        except Exception:  # noqa: BLE001 - reaped later by subprocess' own cleanup
            pass

    def stop(self, grace: float) -> None:
        """Close stdin (``serve`` exits at EOF), wait ``grace`` seconds, then kill."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.proc.wait(timeout=grace)
        except Exception:  # noqa: BLE001
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        # stdin and stdout (read on the caller's thread, never by another); a drained
        # stderr belongs to its thread, which closes it at EOF.
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except Exception:  # noqa: BLE001
                pass


_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


class Client:
    """A supervised ``deploy-guard serve`` child and the calls made through it.

    Thread-safe: one lock pairs each request with its answer; concurrent callers
    queue on it (their wait counts against their own timeout).

    :param timeout: budget of one call in seconds (lock wait, child start, answer).
        Past it the call answers :data:`ALLOW`, and a child that did not answer is
        killed and replaced on the next call. Keep it above the host's own
        worst case (``DEPLOY_GUARD_BUSY_TIMEOUT_MS`` + ``DEPLOY_GUARD_TIMEOUT_MS``).
    :param binary: the ``deploy-guard`` executable; default ``$DEPLOY_GUARD_BIN``,
        else ``deploy-guard`` on ``PATH`` (looked up at each start).
    :param env: the child's whole environment; default the live ``os.environ``.
    :param args: extra ``serve`` flags, e.g. ``["--db", path]``.
    :param stderr: the child's stderr: ``None`` (default) inherits the parent's
        stderr; ``"log"`` drains it into the ``orchestrator.deploy_status_guard.child``
        logger at DEBUG; or anything :class:`subprocess.Popen` accepts (``DEVNULL``).
    """

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        binary: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        args: Sequence[str] = (),
        stderr: Any = None,
    ) -> None:
        timeout = float(timeout)
        if not timeout > 0:
            raise ValueError("timeout must be > 0 seconds, got %r" % (timeout,))
        self.timeout = timeout
        self._binary = binary
        self._env = None if env is None else dict(env)
        self._args = [str(a) for a in args]
        self._stderr = stderr
        self._lock = threading.Lock()
        self._child: Optional[_Child] = None
        self._failures = 0
        self._next_spawn = 0.0
        self._last_error: Optional[str] = None
        self._closed = False
        _clients.add(self)

    # -- public -----------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        """Pid of the current child, or None when none is running."""
        child = self._child
        return child.pid if child is not None and child.alive() else None

    def start(self) -> None:
        """Start the child now instead of at the first call (never raises)."""
        try:
            if self._lock.acquire(timeout=self.timeout):
                try:
                    self._ensure_child()
                finally:
                    self._lock.release()
        except Exception as e:  # noqa: BLE001 - never-raise
            logger.warning("deploy_status_guard: cannot start deploy-guard: %s", e)

    def decide(self, work_item_id: Any, target_status: Any, reason: Any = None) -> str:
        """What a deploy-phase setter should do: ALLOW, CONVERGE_DONE or SUPPRESS.

        Same signature and contract as the seed's ``decide()``: never raises;
        every client-side failure is ALLOW (fail-safe); one structured log line
        per call (INFO for ALLOW, WARNING otherwise).

        A ``target_status`` outside AWAITING/DEPLOYING/MONITORING is answered ALLOW
        with a warning, without asking deploy-guard. The seed would have treated
        such a target as "not monitoring" (so, for an in-scope ``done`` task, it
        would have converged to Done); this client chooses ALLOW (fail-safe, the
        1:1 behaviour) instead: an unknown setter is a bug to look at, not a
        reason to rewrite a status.
        """
        try:
            verdict = self.decide_full(work_item_id, target_status, reason).verdict
            return verdict if verdict in VERDICTS else ALLOW
        except Exception:  # noqa: BLE001 - never-raise
            return ALLOW

    def decide_full(self, work_item_id: Any, target_status: Any, reason: Any = None) -> Decision:
        """The whole decision object (see the module docstring); never raises.

        On a client-side failure: ``verdict`` ALLOW, ``rule`` ``fail-safe`` and
        ``error`` starting with ``client:``. Unknown targets as in :meth:`decide`.
        """
        try:
            decision = self._decide(work_item_id, target_status, reason)
        except Exception as e:  # noqa: BLE001 - never-raise; fail-safe to ALLOW
            decision = _failsafe(work_item_id, reason, target_status, "unexpected error: %r" % (e,))
            self._warn(work_item_id, target_status, decision["error"])
        _log_decision(decision)
        return decision

    def monitor_tick(self, work_item_id: Any, reason: Any = None) -> str:
        """The post-deploy monitor's guard (the seed's D4): PROCEED, or NOOP when the
        task was cancelled during its window (a zombie tick: no status PATCH, no
        re-queue). Never raises; every client-side failure is PROCEED (fail-safe, the
        monitor's behaviour before the guard); one log line per call (INFO for
        PROCEED, WARNING for NOOP)."""
        try:
            verdict = self.monitor_tick_full(work_item_id, reason).verdict
            return verdict if verdict in TICK_VERDICTS else PROCEED
        except Exception:  # noqa: BLE001 - never-raise
            return PROCEED

    def monitor_tick_full(self, work_item_id: Any, reason: Any = None) -> Decision:
        """The whole decision object of a tick (``target`` is None); never raises."""
        try:
            decision = self._decide(work_item_id, None, reason, tick=True)
        except Exception as e:  # noqa: BLE001 - never-raise; fail-safe to PROCEED
            decision = _failsafe(work_item_id, reason, None, "unexpected error: %r" % (e,), tick=True)
            self._warn(work_item_id, None, decision["error"], tick=True)
        _log_decision(decision, tick=True)
        return decision

    def close(self) -> None:
        """Stop the child (EOF on its stdin, then kill). Later calls answer ALLOW."""
        self._closed = True
        got = False
        try:
            got = self._lock.acquire(timeout=self.timeout + 1.0)
            child, self._child = self._child, None
            if child is not None:
                child.stop(grace=1.0)
        except Exception:  # noqa: BLE001 - close never raises
            pass
        finally:
            if got:
                self._lock.release()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<deploy_guard.sidecar.Client pid=%s timeout=%s>" % (self.pid, self.timeout)

    # -- internals --------------------------------------------------------------

    def _decide(self, work_item_id: Any, target_status: Any, reason: Any, tick: bool = False) -> Decision:
        """A stamp's decision (``tick`` false) or a monitor tick's (``target_status``
        unused), asked of the child."""
        deadline = time.monotonic() + self.timeout
        caller = None if reason is None else (reason if isinstance(reason, str) else str(reason))
        fail = lambda work_item, why: self._fail(work_item, caller, target_status, why, tick=tick)  # noqa: E731
        if not tick and (not isinstance(target_status, str) or target_status not in TARGETS):
            error = "unknown target %s (expected %s, %s or %s): not asking deploy-guard" % (
                _short(target_status), AWAITING, DEPLOYING, MONITORING,
            )
            return fail(work_item_id, error)
        if work_item_id is None:
            return fail(work_item_id, "work item id is None")
        work_item = work_item_id if isinstance(work_item_id, str) else str(work_item_id)
        request = (
            {"op": "tick", "work_item": work_item, "caller": caller}
            if tick
            else {"work_item": work_item, "target": target_status, "caller": caller}
        )
        line = json.dumps(request, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        if len(line) > _MAX_REQUEST_BYTES:
            return fail(
                work_item,
                "request of %d bytes exceeds deploy-guard's %d-byte line limit" % (len(line), _MAX_REQUEST_BYTES),
            )
        if self._closed:
            return fail(work_item, "client is closed")
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return fail(work_item, "no turn within %.3gs (another call holds deploy-guard)" % self.timeout)
        try:
            return self._exchange(line + b"\n", work_item, caller, None if tick else target_status, deadline, tick)
        finally:
            self._lock.release()

    def _exchange(
        self, data: bytes, work_item: str, caller: Optional[str], target: Optional[str], deadline: float, tick: bool
    ) -> Decision:
        """Send one request and read its answer; the lock is held."""
        retried = False
        while True:
            child, problem = self._ensure_child()
            if child is None:
                return self._fail(work_item, caller, target, problem or "deploy-guard unavailable", tick=tick)
            try:
                answer = self._ask(child, data, deadline)
                decision = self._validate(answer, work_item, target, tick)
            except _ProtocolError as e:
                if e.kill:
                    self._drop_child(child, str(e))
                if e.retry and not retried and time.monotonic() < deadline and not self._closed:
                    retried = True
                    logger.info("deploy_status_guard: %s; retrying on a fresh deploy-guard", e)
                    continue
                return self._fail(work_item, caller, target, str(e), tick=tick)
            self._failures = 0
            self._next_spawn = 0.0
            return decision

    def _ask(self, child: _Child, data: bytes, deadline: float) -> bytes:
        # Unsolicited lines (there should be none) would shift every later answer.
        for stale in child.pending():
            if stale is _EOF:
                raise _ProtocolError(self._exit_text(child, "deploy-guard exited"), retry=True)
            if stale is _OVERLONG:
                raise _ProtocolError("deploy-guard wrote an over-long line")
            logger.warning("deploy_status_guard: discarding unsolicited deploy-guard output %s", _short(stale))
        try:
            child.write(data)
        except (OSError, ValueError) as e:
            raise _ProtocolError(self._exit_text(child, "cannot write to deploy-guard (%s)" % e), retry=True)
        item = child.read_answer(deadline)
        if item is None:
            raise _ProtocolError(
                "deploy-guard (pid %d) did not answer within %.3gs: killed" % (child.pid, self.timeout)
            )
        if item is _EOF:
            raise _ProtocolError(self._exit_text(child, "deploy-guard exited before answering"), retry=True)
        if item is _OVERLONG:
            raise _ProtocolError("deploy-guard answered a line over %d bytes" % _MAX_ANSWER_BYTES)
        return item

    @staticmethod
    def _validate(raw: bytes, work_item: str, target: Optional[str], tick: bool = False) -> Decision:
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _ProtocolError("deploy-guard answered something that is not JSON: %s" % _short(raw))
        if not isinstance(answer, dict):
            raise _ProtocolError("deploy-guard answered JSON that is not an object: %s" % _short(raw))
        if "verdict" not in answer:
            if "error" in answer:
                # A well-formed refusal of this request: the stream is still in step.
                raise _ProtocolError(
                    "deploy-guard refused the request: %s" % _short(answer.get("error")), kill=False
                )
            raise _ProtocolError("deploy-guard answered an object without a verdict: %s" % _short(raw))
        verdict = answer.get("verdict")
        if not isinstance(verdict, str) or verdict not in (TICK_VERDICTS if tick else VERDICTS):
            raise _ProtocolError("deploy-guard answered an unknown verdict %s" % _short(verdict))
        if answer.get("work_item") != work_item or answer.get("target") != target:
            raise _ProtocolError(
                "deploy-guard answered for another request (work_item=%s target=%s): out of step"
                % (_short(answer.get("work_item")), _short(answer.get("target")))
            )
        try:
            return Decision(**{key: answer.get(key) for key in _FIELDS})
        except (TypeError, ValueError) as e:
            raise _ProtocolError("deploy-guard answered a field of the wrong type: %s (%s)" % (_short(raw), e))

    def _ensure_child(self) -> Tuple[Optional[_Child], Optional[str]]:
        """The running child, or a new one; (None, why) when none can run. Lock held."""
        child = self._child
        if child is not None:
            if child.owner_pid != os.getpid():
                self._child = child = None  # inherited through fork: the parent's child
            elif child.alive():
                return child, None
            else:
                self._drop_child(child, self._exit_text(child, "deploy-guard exited"))
        if self._closed:
            return None, "client is closed"
        now = time.monotonic()
        if now < self._next_spawn:
            return None, "deploy-guard restart backs off for %.2fs more (last failure: %s)" % (
                self._next_spawn - now, self._last_error,
            )
        binary = self._resolve_binary()
        if binary is None:
            self._note_failure("deploy-guard binary not found ($%s unset, no %s on PATH)" % (ENV_BIN, DEFAULT_BINARY_NAME))
            return None, self._last_error
        try:
            child = _Child([binary, "serve"] + self._args, self._env, self._stderr)
        except Exception as e:  # noqa: BLE001
            self._note_failure("cannot start %s: %s" % (binary, e))
            return None, self._last_error
        logger.info("deploy_status_guard: started deploy-guard serve (pid %d, %s)", child.pid, binary)
        self._child = child
        return child, None

    def _resolve_binary(self) -> Optional[str]:
        if self._binary:
            return self._binary
        env = self._env if self._env is not None else os.environ
        explicit = env.get(ENV_BIN)
        if explicit:
            return explicit
        return shutil.which(DEFAULT_BINARY_NAME, path=env.get("PATH", os.defpath))

    def _drop_child(self, child: _Child, why: str) -> None:
        if self._child is child:
            self._child = None
        child.kill()
        self._note_failure(why)

    def _note_failure(self, why: str) -> None:
        self._failures += 1
        self._last_error = why
        if self._failures >= 2:
            delay = min(_BACKOFF_BASE * (2 ** (self._failures - 2)), _BACKOFF_MAX)
            self._next_spawn = time.monotonic() + delay

    @staticmethod
    def _exit_text(child: _Child, what: str) -> str:
        try:
            child.proc.wait(timeout=0.2)
        except Exception:  # noqa: BLE001
            pass
        rc = child.proc.poll()
        if rc is None:
            return "%s (pid %d)" % (what, child.pid)
        if rc < 0:
            try:
                return "%s (pid %d killed by %s)" % (what, child.pid, signal.Signals(-rc).name)
            except ValueError:
                pass
        return "%s (pid %d, exit status %d)" % (what, child.pid, rc)

    def _fail(self, work_item: Any, caller: Any, target: Any, why: str, tick: bool = False) -> Decision:
        self._warn(work_item, target, why, tick=tick)
        return _failsafe(work_item, caller, target, why, tick=tick)

    @staticmethod
    def _warn(work_item: Any, target: Any, why: str, tick: bool = False) -> None:
        # The caller's values escaped as in the decision line: no forged second line.
        try:
            if tick:
                logger.warning(
                    "deploy_status_guard.monitor_tick error for %s -> PROCEED: %s",
                    _escaped(work_item), _escaped(why),
                )
            else:
                logger.warning(
                    "deploy_status_guard.decide error for %s (target=%s) -> ALLOW: %s",
                    _escaped(work_item), _escaped(target), _escaped(why),
                )
        except Exception:  # noqa: BLE001 - logging must never raise
            pass


# How long an answer is looked for without sleeping before the client waits in poll():
# most answers come within it, and an answer found awake saves the wake-up of a
# sleeping thread.
_SPIN_SECONDS = 50e-6

def _log_decision(decision: Decision, tick: bool = False) -> None:
    """One structured line per verdict, the seed's format plus rule/policy/error.

    Written by the extension's own code (``_native.log_decision``), the very line
    :class:`deploy_guard.Guard` logs for the same decision: the same message, field
    order and escaping (a control or format character in a field is written as
    ``\\u{..}``, so no field can end the line and forge another). The record is located
    at the orchestrator's call site: the first frame outside this module.
    """
    try:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename == _THIS_FILE:
            frame = frame.f_back
        _native_log_decision(decision, frame, tick)
    except Exception:  # noqa: BLE001 - logging must never raise
        pass


_THIS_FILE = _log_decision.__code__.co_filename


# ---------------------------------------------------------------------------
# Module-level API over one shared, lazily created client
# ---------------------------------------------------------------------------

_default: Optional[Client] = None
_default_lock = threading.Lock()


def _default_timeout() -> float:
    raw = os.environ.get(ENV_CLIENT_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    logger.warning("deploy_status_guard: ignoring %s=%r (want seconds > 0)", ENV_CLIENT_TIMEOUT, raw)
    return DEFAULT_TIMEOUT


def get_default_client() -> Client:
    """The shared client of :func:`decide` / :func:`decide_full`, created on first use.

    Its timeout is ``$DEPLOY_GUARD_CLIENT_TIMEOUT`` seconds (default 2); its child
    inherits ``os.environ`` as it is when the child starts.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = Client(timeout=_default_timeout())
        return _default


def close_default_client() -> None:
    """Stop the shared client's child; the next module-level call makes a new client."""
    global _default
    with _default_lock:
        client, _default = _default, None
    if client is not None:
        client.close()


def decide(work_item_id: Any, target_status: Any, reason: Any = None) -> str:
    """Drop-in for the seed's ``decide()``: ALLOW | CONVERGE_DONE | SUPPRESS, never raises.

    A target outside AWAITING/DEPLOYING/MONITORING: the seed would have treated it
    as "not monitoring" (a ``done`` task in scope would have converged to Done);
    this client answers ALLOW (fail-safe) with a warning instead, without asking
    deploy-guard. See :meth:`Client.decide`.
    """
    try:
        return get_default_client().decide(work_item_id, target_status, reason)
    except Exception as e:  # noqa: BLE001 - never-raise
        try:
            logger.warning(
                "deploy_status_guard.decide error for %s (target=%s) -> ALLOW: %s",
                _escaped(work_item_id), _escaped(target_status), _escaped(e),
            )
        except Exception:  # noqa: BLE001
            pass
        return ALLOW


def decide_full(work_item_id: Any, target_status: Any, reason: Any = None) -> Decision:
    """The whole decision object through the shared client; never raises."""
    try:
        return get_default_client().decide_full(work_item_id, target_status, reason)
    except Exception as e:  # noqa: BLE001 - never-raise
        return _failsafe(work_item_id, reason, target_status, "unexpected error: %r" % (e,))


def monitor_tick(work_item_id: Any, reason: Any = None) -> str:
    """The post-deploy monitor's guard through the shared client: PROCEED | NOOP,
    never raises (any failure is PROCEED). See :meth:`Client.monitor_tick`."""
    try:
        return get_default_client().monitor_tick(work_item_id, reason)
    except Exception as e:  # noqa: BLE001 - never-raise
        try:
            logger.warning(
                "deploy_status_guard.monitor_tick error for %s -> PROCEED: %s", _escaped(work_item_id), _escaped(e)
            )
        except Exception:  # noqa: BLE001
            pass
        return PROCEED


def _after_fork_in_child() -> None:
    # A forked process owns neither the parent's children nor its locks' state.
    global _default, _default_lock
    _default_lock = threading.Lock()
    _default = None
    for client in list(_clients):
        client._lock = threading.Lock()
        client._child = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

atexit.register(close_default_client)
