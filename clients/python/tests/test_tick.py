"""The post-deploy monitor's guard (the seed's D4): deploy_guard.monitor_tick in
run_post_deploy_monitor answers PROCEED, or NOOP for a task cancelled during its
window, in-process and through the sidecar, with one decision line each (INFO for
PROCEED, WARNING for NOOP), the same bytes through both; a policy of the 1.0.0 world
answers PROCEED, rule tick-not-in-policy; nothing raises. Against the installed wheel,
the real binary and real SQLite files.
"""
from __future__ import annotations

import logging
import sqlite3
import subprocess
import unittest

from fixtures import BINARY, LOGGER, Workspace, guard_env, require

import deploy_guard
from deploy_guard import NOOP, PROCEED, Guard
from deploy_guard.sidecar import Client

# (work item, expected verdict, expected rule) under the reference policy (1.2.0, the
# 1.1.0 world), the default scope (self-hosting repos only).
TICKS = [
    ("ORCH-CANCEL", NOOP, "zombie-tick"),
    ("ORCH-LATE-CANCEL", NOOP, "zombie-tick"),
    ("ORCH-WIN", PROCEED, "proceed"),
    ("ORCH-LIVE", PROCEED, "proceed"),
    ("TRAIL-1", PROCEED, "out-of-scope"),
    ("NO-SUCH-ITEM", PROCEED, "task-not-found"),
]


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TestMonitorTick(unittest.TestCase):
    ws: Workspace

    @classmethod
    def setUpClass(cls) -> None:
        require(BINARY, "build it with `cargo build --release --workspace`, or set DEPLOY_GUARD_BIN")
        cls.ws = Workspace()
        # The cancelled tasks are cancelled during their window: armed, not done.
        conn = sqlite3.connect(str(cls.ws.db))
        conn.executemany(
            "INSERT INTO post_deploy_sentinels VALUES ('orchestrator', ?, 'ARMED')",
            [("ORCH-CANCEL",), ("ORCH-LATE-CANCEL",)],
        )
        conn.commit()
        conn.close()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.ws.cleanup()

    def setUp(self) -> None:
        self.logger = logging.getLogger(LOGGER)
        self.recorder = Recorder()
        self.logger.addHandler(self.recorder)
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)

    def tearDown(self) -> None:
        self.logger.removeHandler(self.recorder)
        self.logger.setLevel(self.level)

    def guard(self, policy=None) -> Guard:
        guard = Guard(db=str(self.ws.db), policy=str(policy or self.ws.active), watch=False, cache="off")
        self.addCleanup(guard.close)
        return guard

    def client(self, policy=None) -> Client:
        client = Client(
            timeout=30.0,
            binary=str(BINARY),
            env=guard_env(DEPLOY_GUARD_DB=str(self.ws.db), DEPLOY_GUARD_POLICY=str(policy or self.ws.active),
                          DEPLOY_GUARD_CACHE="off"),
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(client.close)
        client.start()
        self.assertIsNotNone(client.pid, "deploy-guard serve did not start")
        return client

    def logged(self, call, *args) -> tuple:
        """What one call returned, and the records of the decision line it logged."""
        start = len(self.recorder.records)
        verdict = call(*args)
        return verdict, [r for r in self.recorder.records[start:] if r.name == LOGGER]

    def test_the_constants_are_the_contracts(self) -> None:
        self.assertEqual((deploy_guard.PROCEED, deploy_guard.NOOP), ("PROCEED", "NOOP"))
        self.assertEqual((deploy_guard.sidecar.PROCEED, deploy_guard.sidecar.NOOP), ("PROCEED", "NOOP"))
        self.assertIs(deploy_guard.monitor_tick, deploy_guard._native.monitor_tick)

    def test_a_zombie_tick_is_noop_and_every_other_tick_proceeds_through_both_transports(self) -> None:
        formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
        for transport, tick in (("in-process", self.guard().monitor_tick), ("sidecar", self.client().monitor_tick)):
            for work_item, verdict, rule in TICKS:
                with self.subTest(transport=transport, work_item=work_item):
                    got, records = self.logged(tick, work_item, "run_post_deploy_monitor")
                    self.assertEqual(got, verdict)
                    self.assertEqual(len(records), 1, [r.getMessage() for r in records])
                    record = records[0]
                    self.assertEqual(record.levelno, logging.WARNING if verdict == NOOP else logging.INFO)
                    message = record.getMessage()
                    self.assertTrue(
                        message.startswith(
                            "deploy_status_guard: tick work_item=%s caller=run_post_deploy_monitor db_stage=" % work_item
                        ),
                        message,
                    )
                    self.assertNotIn("target=", message)
                    self.assertIn(" verdict=%s rule=%s policy=deploy-status-guard@1.2.0 error=None" % (verdict, rule),
                                  message)
                    # Located at the caller's frame: this test's code.
                    self.assertTrue(record.pathname.endswith("test_tick.py"), record.pathname)
                    self.assertNotIn("\n", formatter.format(record))

    def test_both_transports_log_the_same_tick_line(self) -> None:
        in_process, ours = self.logged(self.guard().monitor_tick, "ORCH-CANCEL", "zombie\nforged line")
        sidecar, theirs = self.logged(self.client().monitor_tick, "ORCH-CANCEL", "zombie\nforged line")
        self.assertEqual((in_process, sidecar), (NOOP, NOOP))
        self.assertEqual([r.getMessage() for r in ours], [r.getMessage() for r in theirs])
        self.assertIn("caller=zombie\\u{a}forged line", ours[0].getMessage())

    def test_the_whole_tick_decision_is_the_same_through_both_transports(self) -> None:
        in_process, ours = self.logged(self.guard().monitor_tick_full, "ORCH-CANCEL", "run_post_deploy_monitor")
        sidecar, theirs = self.logged(self.client().monitor_tick_full, "ORCH-CANCEL", "run_post_deploy_monitor")
        self.assertEqual(in_process.as_dict(), sidecar.as_dict())
        self.assertEqual(
            (in_process.work_item, in_process.caller, in_process.target, in_process.db_stage),
            ("ORCH-CANCEL", "run_post_deploy_monitor", None, "cancelled"),
        )
        self.assertEqual((in_process.window_active, in_process.verdict, in_process.rule, in_process.error),
                         (True, NOOP, "zombie-tick", None))
        self.assertTrue(in_process.policy_digest.startswith("sha256:"), in_process.policy_digest)
        # One decision line each, the tick's, the same.
        self.assertEqual([r.getMessage() for r in ours], [r.getMessage() for r in theirs])
        self.assertEqual(len(ours), 1)

    def test_a_policy_of_the_first_world_answers_proceed_as_before(self) -> None:
        # The next policy (1.1.0) is a component of the 1.0.0 world: no monitor.
        for transport, tick in (("in-process", self.guard(self.ws.next).monitor_tick),
                                ("sidecar", self.client(self.ws.next).monitor_tick)):
            with self.subTest(transport=transport):
                got, records = self.logged(tick, "ORCH-CANCEL")
                self.assertEqual(got, PROCEED)
                self.assertEqual(len(records), 1)
                self.assertEqual(records[0].levelno, logging.INFO)
                self.assertIn("verdict=PROCEED rule=tick-not-in-policy policy=deploy-status-guard@1.1.0",
                              records[0].getMessage())

    def test_no_tick_raises_and_a_failure_proceeds(self) -> None:
        guard = self.guard()
        client = self.client()
        for bad in (None, b"\xff", object(), "x" * (1 << 20), "\ud800"):
            for transport, tick in (("in-process", guard.monitor_tick), ("sidecar", client.monitor_tick)):
                with self.subTest(transport=transport, work_item=repr(bad)[:40]):
                    self.assertIn(tick(bad, object()), (PROCEED, NOOP))
        guard.close()
        got, records = self.logged(guard.monitor_tick, "ORCH-CANCEL")
        self.assertEqual(got, PROCEED)
        self.assertIn("rule=fail-safe", records[0].getMessage())
        self.assertIn("the guard is closed", records[0].getMessage())
        broken = Guard(db=str(self.ws.root / "no-such.db"), policy=str(self.ws.active), watch=False, cache="off")
        self.addCleanup(broken.close)
        got, records = self.logged(broken.monitor_tick, "ORCH-CANCEL")
        self.assertEqual(got, PROCEED)
        self.assertIn("rule=fail-safe", records[0].getMessage())

    def test_the_sidecar_fails_safe_to_proceed_without_its_binary(self) -> None:
        client = Client(timeout=5.0, binary=str(self.ws.root / "no-such-binary"), stderr=subprocess.DEVNULL)
        self.addCleanup(client.close)
        decision = client.monitor_tick_full("ORCH-CANCEL")
        self.assertEqual((decision.verdict, decision.rule, decision.target), (PROCEED, "fail-safe", None))
        self.assertTrue(decision.error.startswith("client: "), decision.error)


if __name__ == "__main__":
    unittest.main()
