"""The decision line is one implementation for both transports: the in-process
deploy_guard.Guard and the sidecar deploy_guard.sidecar.Client log, for the same
decision, one record each with the same message, escaped the same way, located at
the orchestrator's call site. Against the installed wheel and the real binary.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import unittest

from fixtures import ALLOW, AWAITING, BINARY, DEPLOYING, EXPECTED, LOGGER, Workspace, guard_env, require

from deploy_guard import Guard
from deploy_guard.sidecar import Client

# A work item that would start a second, forged line if it were logged as it is.
FORGED = "WI-1\n2026-01-01 00:00:00 INFO orchestrator.deploy_status_guard: forged verdict=ALLOW"


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TestOneDecisionLine(unittest.TestCase):
    ws: Workspace

    @classmethod
    def setUpClass(cls) -> None:
        require(BINARY, "build it with `cargo build --release --workspace`, or set DEPLOY_GUARD_BIN")
        cls.ws = Workspace()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.ws.cleanup()

    def setUp(self) -> None:
        self.guard = Guard(db=str(self.ws.db), policy=str(self.ws.active), watch=False, cache="off")
        # A generous timeout: a hang fails the call (fail-safe), never the suite.
        self.client = Client(
            timeout=30.0,
            binary=str(BINARY),
            env=guard_env(DEPLOY_GUARD_DB=str(self.ws.db), DEPLOY_GUARD_POLICY=str(self.ws.active),
                          DEPLOY_GUARD_CACHE="off"),
            stderr=subprocess.DEVNULL,
        )
        # Started before the recording begins: its "started deploy-guard serve" line is
        # not a decision's.
        self.client.start()
        self.assertIsNotNone(self.client.pid, "deploy-guard serve did not start")
        self.logger = logging.getLogger(LOGGER)
        self.recorder = Recorder()
        self.logger.addHandler(self.recorder)
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)

    def tearDown(self) -> None:
        self.client.close()
        self.guard.close()
        self.logger.removeHandler(self.recorder)
        self.logger.setLevel(self.level)

    def logged(self, decide, *args) -> list:
        """The records of the decision line that one call logged."""
        start = len(self.recorder.records)
        decide(*args)
        return [r for r in self.recorder.records[start:] if r.name == LOGGER]

    def test_a_forged_work_item_is_one_line_through_both_transports(self) -> None:
        in_process = self.logged(self.guard.decide, FORGED, AWAITING)
        sidecar = self.logged(self.client.decide, FORGED, AWAITING)
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        for transport, records in (("in-process", in_process), ("sidecar", sidecar)):
            with self.subTest(transport=transport):
                self.assertEqual(len(records), 1, [r.getMessage() for r in records])
                self.assertNotIn("\n", records[0].getMessage())
                self.assertNotIn("\n", formatter.format(records[0]))
                self.assertIn("work_item=WI-1\\u{a}2026-01-01 00:00:00 INFO ", records[0].getMessage())
                self.assertEqual(records[0].levelno, logging.INFO)
                self.assertIn("verdict=ALLOW rule=task-not-found", records[0].getMessage())
        self.assertEqual(in_process[0].getMessage(), sidecar[0].getMessage())

    def test_both_transports_log_the_same_bytes(self) -> None:
        cases = [(w, t, "tick") for w, t, _, _ in EXPECTED]
        cases += [
            ("a\nb", DEPLOYING, "r\r\u202eevil"),
            ("quote\"back\\slash", AWAITING, "plain\\text"),
            ("nul\x00\x1b[2J", AWAITING, None),
            ("ORCH-\u00e9\u4e2d\u200b", AWAITING, "\ufeff"),
            (12345, AWAITING, 7),
        ]
        for work_item, target, reason in cases:
            with self.subTest(work_item=work_item, target=target):
                ours = self.logged(self.guard.decide, work_item, target, reason)
                theirs = self.logged(self.client.decide, work_item, target, reason)
                self.assertEqual(len(ours), 1)
                self.assertEqual(len(theirs), 1)
                self.assertEqual((theirs[0].levelno, theirs[0].getMessage()), (ours[0].levelno, ours[0].getMessage()))
                self.assertFalse(any(c in ours[0].getMessage() for c in "\n\r\x00\x1b\u202e\u200b\ufeff"),
                                 repr(ours[0].getMessage()))

    def test_a_value_that_is_not_text_cannot_forge_a_line_either(self) -> None:
        # Decided as its str(), and logged as it: escaped like a string.
        class Forger:
            def __str__(self) -> str:
                return FORGED

        ours = self.logged(self.guard.decide, Forger(), AWAITING, Forger())
        theirs = self.logged(self.client.decide, Forger(), AWAITING, Forger())
        self.assertEqual((len(ours), len(theirs)), (1, 1))
        self.assertNotIn("\n", ours[0].getMessage())
        self.assertEqual(ours[0].getMessage(), theirs[0].getMessage())
        self.assertIn("caller=WI-1\\u{a}2026-01-01 ", ours[0].getMessage())

    def test_both_records_point_at_the_call_site(self) -> None:
        call_line = sys._getframe().f_lineno + 1
        self.guard.decide("ORCH-LIVE", AWAITING)
        self.client.decide("ORCH-LIVE", AWAITING)
        records = [r for r in self.recorder.records if r.name == LOGGER]
        name = "test_both_records_point_at_the_call_site"
        self.assertEqual([(r.pathname, r.lineno, r.funcName) for r in records],
                         [(__file__, call_line, name), (__file__, call_line + 1, name)])
        self.assertEqual([r.levelno for r in records], [logging.INFO, logging.INFO])
        self.assertEqual(records[0].getMessage(), records[1].getMessage())
        self.assertIn("verdict=%s" % ALLOW, records[0].getMessage())


if __name__ == "__main__":
    unittest.main()
