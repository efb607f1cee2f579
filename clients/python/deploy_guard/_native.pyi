"""Type stubs of the extension module deploy_guard._native (Rust, pyo3)."""
from os import PathLike
from types import FrameType
from typing import Any, Dict, Optional, Tuple, Union

_Path = Union[str, bytes, "PathLike[str]", "PathLike[bytes]"]

#: The decision object's fields, in the contract's order (the host's list).
FIELDS: Tuple[str, ...]

class Decision:
    """The decision object: the contract's fields as attributes."""

    work_item: Any
    caller: Any
    target: Any
    db_stage: Optional[str]
    window_active: Optional[bool]
    verdict: str
    rule: str
    policy: Optional[str]
    policy_digest: Optional[str]
    error: Optional[str]
    def __init__(
        self,
        *,
        work_item: Any,
        caller: Any,
        target: Any,
        db_stage: Optional[str],
        window_active: Optional[bool],
        verdict: str,
        rule: str,
        policy: Optional[str],
        policy_digest: Optional[str],
        error: Optional[str],
    ) -> None: ...
    def as_dict(self) -> Dict[str, Any]: ...
    def __getitem__(self, key: str) -> Any: ...
    def get(self, key: str, default: Any = None) -> Any: ...

class Policy:
    """The live policy."""

    name: str
    version: str
    digest: str
    @property
    def identity(self) -> str: ...

class Guard:
    """The deploy-status guard in this process; no call raises."""

    def __init__(
        self,
        db: Optional[_Path] = None,
        policy: Optional[_Path] = None,
        *,
        config: Optional[_Path] = None,
        watch: Optional[bool] = None,
        **settings: Any,
    ) -> None: ...
    def decide(self, work_item_id: Any, target_status: Any, reason: Any = None) -> str: ...
    def decide_full(self, work_item_id: Any, target_status: Any, reason: Any = None) -> Decision: ...
    def monitor_tick(self, work_item_id: Any, reason: Any = None) -> str: ...
    def monitor_tick_full(self, work_item_id: Any, reason: Any = None) -> Decision: ...
    @property
    def policy(self) -> Optional[Policy]: ...
    @property
    def problem(self) -> Optional[str]: ...
    @property
    def watching(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def metrics(self) -> str: ...
    def watch(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Guard": ...
    def __exit__(self, *args: Any) -> bool: ...

def decide(work_item_id: Any, target_status: Any, reason: Any = None) -> str: ...
def decide_full(work_item_id: Any, target_status: Any, reason: Any = None) -> Decision: ...
def monitor_tick(work_item_id: Any, reason: Any = None) -> str: ...
def default_guard() -> Guard: ...
def default_guard_made() -> bool: ...
def before_fork() -> None: ...
def after_fork_in_parent() -> None: ...
def after_fork_in_child() -> None: ...

def log_decision(decision: Decision, frame: Optional[FrameType], tick: bool = False) -> None:
    """The decision line of ``decision`` (a tick's when ``tick``), located at ``frame``
    (the sidecar's line)."""
def escaped(value: Any) -> str:
    """``str(value)`` as the decision line writes a field (control characters escaped)."""
