"""Tests of the in-process transport, deploy_guard.Guard, against the installed wheel:
real policy components, real SQLite files, real threads and real forks.

    target/py-venv/bin/python -m unittest discover -s clients/python/tests -v
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from pathlib import Path
from unittest import mock

import fixtures
from fixtures import (
    ALLOW,
    AWAITING,
    CONVERGE_DONE,
    DEPLOYING,
    EXPECTED,
    FIELDS,
    LOGGER,
    MONITORING,
    SUPPRESS,
    Workspace,
    guard_env,
    replace_file,
    wait_for,
)

import deploy_guard
from deploy_guard import Decision, Guard


class Recorder(logging.Handler):
    """Keeps every record it is handed (a real handler on the real logger)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)  # under the handler's own lock (Handler.handle)

    def messages(self, name_prefix: str = "") -> list:
        return [r.getMessage() for r in list(self.records) if r.name.startswith(name_prefix)]


class GuardCase(unittest.TestCase):
    ws: Workspace

    @classmethod
    def setUpClass(cls) -> None:
        cls.ws = Workspace()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.ws.cleanup()

    def setUp(self) -> None:
        self.guards = []
        self.dir = Path(self.ws.root) / ("case-%s" % self.id().rsplit(".", 1)[-1])
        self.dir.mkdir()
        self.policies = self.dir / "policies"
        self.policies.mkdir()
        self.active = self.policies / "deploy-status-guard.wasm"
        shutil.copyfile(str(self.ws.v1), str(self.active))
        shutil.copyfile(str(fixtures.VECTORS), str(self.policies / fixtures.VECTORS.name))

    def tearDown(self) -> None:
        for g in self.guards:
            g.close()

    def guard(self, **settings) -> Guard:
        settings.setdefault("db", str(self.ws.db))
        settings.setdefault("policy", str(self.active))
        settings.setdefault("watch", False)
        settings.setdefault("cache", "off")
        g = Guard(**settings)
        self.guards.append(g)
        return g

    def assertDecision(self, d: Decision, verdict: str, rule: str) -> None:
        self.assertEqual((d.verdict, d.rule), (verdict, rule), d)


class TestDecisions(GuardCase):
    def test_every_rule_with_the_decision_object(self) -> None:
        g = self.guard()
        digest = g.policy.digest
        for work_item, target, verdict, rule in EXPECTED:
            with self.subTest(work_item=work_item, target=target):
                d = g.decide_full(work_item, target, "tick")
                self.assertDecision(d, verdict, rule)
                self.assertEqual(g.decide(work_item, target, "tick"), verdict)
                self.assertEqual(set(d.as_dict()), FIELDS)
                self.assertEqual((d.work_item, d.target, d.caller), (work_item, target, "tick"))
                self.assertEqual(d.policy, "deploy-status-guard@1.2.0")
                self.assertEqual(d.policy_digest, digest)
                self.assertIsNone(d.error)
                self.assertEqual(d["verdict"], verdict)
                self.assertEqual(d.as_dict()["rule"], rule)

    def test_facts_in_the_decision(self) -> None:
        g = self.guard()
        d = g.decide_full("ORCH-WIN", MONITORING)
        self.assertEqual((d.db_stage, d.window_active, d.caller), ("done", True, None))
        self.assertEqual(g.decide_full("ORCH-PAD", AWAITING).db_stage, "done")
        self.assertIs(g.decide_full("ORCH-CLOSED", MONITORING).window_active, False)
        self.assertIsNone(g.decide_full("NO-SUCH-ITEM", AWAITING).db_stage)

    def test_metrics_count_what_this_guard_decided(self) -> None:
        g = self.guard()
        for work_item, target, _, _ in EXPECTED:
            g.decide(work_item, target, "tick")
        # A target outside the three is refused by the binding, before the library: the
        # library decided exactly the EXPECTED ones.
        g.decide_full("ORCH-061", "no-such-target")
        text = g.metrics()
        self.assertTrue(text.endswith("# EOF\n"), text[-200:])
        series = dict(
            line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
        )
        counted = {}
        for _, _, verdict, rule in EXPECTED:
            key = 'deploy_guard_decisions_total{verdict="%s",rule="%s"}' % (verdict, rule)
            counted[key] = counted.get(key, 0) + 1
        for key, count in counted.items():
            self.assertEqual(float(series.get(key, "0")), count, key)
        self.assertEqual(float(series["deploy_guard_decision_duration_seconds_count"]), len(EXPECTED))
        digest = g.policy.digest
        self.assertEqual(
            series['deploy_guard_policy_info{name="deploy-status-guard",version="1.2.0",digest="%s"}' % digest], "1"
        )

    def test_policy_names_the_live_policy(self) -> None:
        p = self.guard().policy
        self.assertEqual((p.name, p.version, p.identity), ("deploy-status-guard", "1.2.0", "deploy-status-guard@1.2.0"))
        import hashlib
        self.assertEqual(p.digest, "sha256:" + hashlib.sha256(self.active.read_bytes()).hexdigest())

    def test_settings_override_the_environment_and_the_config_file(self) -> None:
        config = self.dir / "guard.toml"
        config.write_text('enabled = false\nrepos = "enduro-trails"\n')
        g = self.guard(config=str(config), enabled=True, self_hosting_repos=["nobody"])
        self.assertIsNone(g.problem)
        self.assertDecision(g.decide_full("TRAIL-1", AWAITING), CONVERGE_DONE, "converge-done")
        self.assertDecision(g.decide_full("ORCH-DONE", AWAITING), ALLOW, "out-of-scope")
        off = self.guard(config=str(config))
        self.assertDecision(off.decide_full("ORCH-DONE", AWAITING), ALLOW, "kill-switch")

    def test_module_level_functions_use_the_environment(self) -> None:
        # The default guard reads os.environ: in a child process with its own.
        script = textwrap.dedent("""
            import json, deploy_guard
            from deploy_guard import decide, decide_full, ALLOW, MONITORING
            out = [decide("ORCH-CANCEL", "awaiting", "tick"), decide("ORCH-DONE", MONITORING),
                   decide_full("ORCH-WIN", MONITORING).rule, deploy_guard.default_guard().watching,
                   deploy_guard.default_guard() is deploy_guard.default_guard()]
            print(json.dumps(out))
        """)
        env = guard_env(DEPLOY_GUARD_DB=str(self.ws.db), DEPLOY_GUARD_POLICY=str(self.active), DEPLOY_GUARD_CACHE="off")
        run = subprocess.run([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(json.loads(run.stdout), [SUPPRESS, CONVERGE_DONE, "monitoring-window-active", True, True])
        self.assertEqual(run.stderr, b"", "nothing on stderr")


class TestNeverRaises(GuardCase):
    def test_odd_arguments(self) -> None:
        g = self.guard()
        cases = [
            (None, AWAITING, "the work item id is None"),
            ("bad\ud800", AWAITING, "not valid Unicode"),
            ("ORCH-DONE", "Monitoring", "unknown target 'Monitoring'"),
            ("ORCH-DONE", None, "unknown target None"),
            ("ORCH-DONE", 3, "unknown target 3"),
            ("ORCH-DONE", b"awaiting", "unknown target b'awaiting'"),
            ("ORCH-DONE", " awaiting", "unknown target ' awaiting'"),
            ("ORCH-DONE", "x" * 10000, "unknown target 'xxxx"),
        ]
        for work_item, target, error in cases:
            with self.subTest(work_item=repr(work_item)[:30], target=repr(target)[:30]):
                d = g.decide_full(work_item, target)
                self.assertDecision(d, ALLOW, "fail-safe")
                self.assertIn(error, d.error)
                self.assertEqual(g.decide(work_item, target), ALLOW)
        self.assertLess(len(g.decide_full("ORCH-DONE", "x" * 10000).error), 400, "the error quotes a short repr")
        # Decided as text: ints, bytes, megabytes, odd reasons.
        self.assertDecision(g.decide_full(12345, AWAITING, object()), ALLOW, "task-not-found")
        self.assertDecision(g.decide_full(b"ORCH-DONE", AWAITING), ALLOW, "task-not-found")
        self.assertDecision(g.decide_full("X" * (4 << 20), AWAITING, "y" * (1 << 20)), ALLOW, "task-not-found")
        self.assertDecision(g.decide_full("ORCH-DONE", AWAITING, "bad\udfff"), CONVERGE_DONE, "converge-done")

        class Unprintable:
            def __str__(self) -> str:
                raise RuntimeError("no")

            __repr__ = __str__

        d = g.decide_full(Unprintable(), AWAITING, Unprintable())
        self.assertDecision(d, ALLOW, "fail-safe")
        self.assertIn("cannot be made text", d.error)
        # and the guard is still right afterwards
        self.assertDecision(g.decide_full("ORCH-CANCEL", AWAITING), SUPPRESS, "cancelled")

    def test_missing_database(self) -> None:
        missing = self.dir / "missing.db"
        d = self.guard(db=str(missing)).decide_full("ORCH-CANCEL", AWAITING)
        self.assertDecision(d, ALLOW, "fail-safe")
        self.assertIn("missing.db", d.error)
        self.assertFalse(missing.exists(), "the database must not be created")

    def test_missing_and_bad_policies(self) -> None:
        garbage = self.dir / "garbage.wasm"
        garbage.write_bytes(b"\x00asm garbage")
        for policy, fragment in ((self.dir / "missing.wasm", "missing.wasm"), (garbage, "garbage.wasm")):
            g = self.guard(policy=str(policy))
            self.assertIsNone(g.policy)
            d = g.decide_full("ORCH-CANCEL", AWAITING)
            self.assertDecision(d, ALLOW, "fail-safe")
            self.assertIn(fragment, d.error)
            self.assertIsNone(d.policy)

    def test_closed_guard(self) -> None:
        g = self.guard()
        self.assertEqual(g.decide("ORCH-CANCEL", AWAITING), SUPPRESS)
        with g:
            pass
        self.assertTrue(g.closed)
        d = g.decide_full("ORCH-CANCEL", AWAITING)
        self.assertDecision(d, ALLOW, "fail-safe")
        self.assertEqual(d.error, "the guard is closed")
        g.close()  # twice is fine

    def test_bad_settings_fail_safe_naming_them(self) -> None:
        for settings, fragment in (
            ({"no_such_key": 1}, "no_such_key"),
            ({"log": 3}, "log"),
            ({"repos": object()}, "repos"),
            ({"fuel": 1 << 80}, "fuel"),
            ({"db": 3.5}, "db"),
        ):
            with self.subTest(settings=list(settings)):
                g = self.guard(**settings)
                self.assertIn(fragment, g.problem)
                d = g.decide_full("ORCH-CANCEL", AWAITING)
                self.assertDecision(d, ALLOW, "fail-safe")
                self.assertIn(fragment, d.error)


class TestLogging(GuardCase):
    def setUp(self) -> None:
        super().setUp()
        self.logger = logging.getLogger(LOGGER)
        self.recorder = Recorder()
        self.logger.addHandler(self.recorder)
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)

    def tearDown(self) -> None:
        self.logger.removeHandler(self.recorder)
        self.logger.setLevel(self.level)
        super().tearDown()

    def test_one_line_per_decision_with_the_originals_fields_rule_and_policy(self) -> None:
        g = self.guard()
        call_line = sys._getframe().f_lineno + 1
        g.decide("ORCH-DONE", AWAITING, "deploy-approve")
        g.decide_full("ORCH-LIVE", AWAITING, None)
        records = [r for r in self.recorder.records if r.name == LOGGER]
        self.assertEqual([r.levelno for r in records], [logging.WARNING, logging.INFO])
        self.assertEqual(
            records[0].getMessage(),
            "deploy_status_guard: work_item=ORCH-DONE caller=deploy-approve target=awaiting db_stage=done "
            "window_active=False verdict=CONVERGE_DONE rule=converge-done policy=deploy-status-guard@1.2.0 error=None")
        self.assertEqual(
            records[1].getMessage(),
            "deploy_status_guard: work_item=ORCH-LIVE caller=None target=awaiting db_stage=deploy "
            "window_active=False verdict=ALLOW rule=non-terminal policy=deploy-status-guard@1.2.0 error=None")
        # The record points at the orchestrator's call site, not at the binding.
        self.assertEqual(
            [(r.pathname, r.lineno, r.funcName) for r in records],
            [(__file__, call_line, "test_one_line_per_decision_with_the_originals_fields_rule_and_policy"),
             (__file__, call_line + 1, "test_one_line_per_decision_with_the_originals_fields_rule_and_policy")])

    def test_the_record_is_made_by_the_loggers_own_factory(self) -> None:
        # The record comes from logging's record factory (Logger.makeRecord), as
        # Logger.log makes it: a factory the orchestrator installed applies.
        g = self.guard()
        original = logging.getLogRecordFactory()

        def tagged(*args: object, **kwargs: object) -> logging.LogRecord:
            record = original(*args, **kwargs)
            record.tagged = True  # type: ignore[attr-defined]
            return record

        logging.setLogRecordFactory(tagged)
        try:
            g.decide("ORCH-LIVE", AWAITING, "tick")
        finally:
            logging.setLogRecordFactory(original)
        records = [r for r in self.recorder.records if r.name == LOGGER]
        self.assertEqual([getattr(r, "tagged", False) for r in records], [True])

    def test_no_field_can_forge_a_line_or_carry_an_escape(self) -> None:
        g = self.guard()
        forged = "ORCH-X\ndeploy_status_guard: work_item=ORCH-061 verdict=ALLOW\x1b[2J"
        g.decide(forged, AWAITING, "tick\r\u202eevil")
        g.decide("ORCH-LIVE", AWAITING, "plain\\text")
        messages = self.recorder.messages(LOGGER)
        self.assertEqual(len(messages), 2, messages)
        for message in messages:
            self.assertFalse(any(c in message for c in "\n\r\x1b\u202e"), repr(message))
        self.assertIn("work_item=ORCH-X\\u{a}deploy_status_guard: work_item=ORCH-061 verdict=ALLOW\\u{1b}[2J ", messages[0])
        self.assertIn("caller=tick\\u{d}\\u{202e}evil ", messages[0])
        # A backslash is escaped too, so an escape cannot be forged either.
        self.assertIn("caller=plain\\\\text ", messages[1])

    def test_levels_below_the_loggers_are_not_built(self) -> None:
        g = self.guard()
        self.logger.setLevel(logging.WARNING)
        asked = []
        original = self.logger.isEnabledFor

        def is_enabled_for(level: int) -> bool:
            asked.append(level)
            return original(level)

        self.logger.isEnabledFor = is_enabled_for  # type: ignore[method-assign]
        try:
            self.assertEqual(g.decide("ORCH-LIVE", AWAITING), ALLOW)
            self.assertEqual(g.decide("ORCH-CANCEL", AWAITING), SUPPRESS)
        finally:
            del self.logger.isEnabledFor
        # Once per decision, before anything of the record is built.
        self.assertEqual(asked, [logging.INFO, logging.WARNING])
        messages = self.recorder.messages(LOGGER)
        self.assertEqual(len(messages), 1, messages)
        self.assertIn("verdict=SUPPRESS", messages[0])

    def test_the_rust_side_prints_nothing_on_stderr(self) -> None:
        # A guard with a bad policy and a bad setting logs errors: only to logging.
        script = textwrap.dedent("""
            import logging, deploy_guard
            g = deploy_guard.Guard(db=%r, policy="/nonexistent/p.wasm", repos="bad token!", watch=True, cache="off")
            print(g.decide("ORCH-CANCEL", "awaiting"), flush=True)
            g.close()
        """ % str(self.ws.db))
        run = subprocess.run([sys.executable, "-c", script], env=guard_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=120)
        self.assertEqual((run.returncode, run.stdout, run.stderr), (0, b"ALLOW\n", b""))

    def test_the_librarys_own_lines_reach_python_logging(self) -> None:
        root = logging.getLogger("deploy_guard")
        recorder = Recorder()
        root.addHandler(recorder)
        root.setLevel(logging.INFO)
        try:
            self.guard(repos="ok, bad token!")
        finally:
            root.removeHandler(recorder)
            root.setLevel(logging.NOTSET)
        messages = recorder.messages("deploy_guard.config")
        self.assertTrue(any("dropping invalid repo token \"bad token!\"" in m for m in messages), messages)


class TestWatch(GuardCase):
    def test_a_swap_is_seen_without_a_restart(self) -> None:
        g = self.guard(watch=True)
        self.assertTrue(g.watching)
        self.assertDecision(g.decide_full("ORCH-FAILED", AWAITING), ALLOW, "non-terminal")
        t0 = time.monotonic()
        replace_file(self.ws.next, self.active)
        swapped = wait_for(lambda: g.policy.version == "1.1.0", within=10)
        elapsed = time.monotonic() - t0
        self.assertTrue(swapped, "the swap was not seen within 10 s")
        print("\n  swap seen after %.3f s" % elapsed, file=sys.stderr)
        d = g.decide_full("ORCH-FAILED", AWAITING)
        self.assertDecision(d, SUPPRESS, "failed")
        self.assertEqual(d.policy, "deploy-status-guard@1.1.0")

    def test_the_kill_switch_and_the_scope_apply_from_the_config_file(self) -> None:
        config = self.dir / "guard.toml"
        config.write_text("enabled = true\n")
        g = self.guard(watch=True, config=str(config))
        self.assertDecision(g.decide_full("ORCH-DONE", AWAITING), CONVERGE_DONE, "converge-done")
        config.write_text("enabled = false\n")
        off = wait_for(lambda: g.decide_full("ORCH-DONE", AWAITING).rule == "kill-switch", within=10)
        self.assertTrue(off, "the kill-switch did not apply within 10 s")
        config.write_text('enabled = true\nrepos = "enduro-trails"\n')
        scoped = wait_for(lambda: g.decide_full("TRAIL-1", AWAITING).verdict == CONVERGE_DONE, within=10)
        self.assertTrue(scoped, "the new scope did not apply within 10 s")
        self.assertDecision(g.decide_full("ORCH-DONE", AWAITING), ALLOW, "out-of-scope")

    def test_a_bad_file_never_goes_live(self) -> None:
        policy_log = logging.getLogger("deploy_guard.policy")
        recorder = Recorder()
        policy_log.addHandler(recorder)
        policy_log.setLevel(logging.INFO)
        try:
            g = self.guard(watch=True)
            digest = g.policy.digest
            garbage = self.dir / "garbage.wasm"
            garbage.write_bytes(b"\x00asm\x0d\x00\x01\x00 not a component")
            replace_file(garbage, self.active)
            refused = wait_for(lambda: [m for m in recorder.messages() if "policy refused" in m], within=10)
            self.assertTrue(refused, "no refusal was logged within 10 s: %s" % recorder.messages())
            self.assertIn("keeping deploy-status-guard@1.2.0", refused[0])
            self.assertEqual(g.policy.digest, digest)
            self.assertDecision(g.decide_full("ORCH-CANCEL", AWAITING), SUPPRESS, "cancelled")
            # The loop stays hostile to garbage but open to a good file.
            replace_file(self.ws.next, self.active)
            self.assertTrue(wait_for(lambda: g.policy.version == "1.1.0", within=10))
        finally:
            policy_log.removeHandler(recorder)
            policy_log.setLevel(logging.NOTSET)


class TestThreads(GuardCase):
    def test_eight_threads_get_the_verdicts_of_one(self) -> None:
        g = self.guard()
        single = [(d.verdict, d.rule) for d in (g.decide_full(w, t) for w, t, _, _ in EXPECTED)]
        self.assertEqual(single, [(v, r) for _, _, v, r in EXPECTED])
        results = {}
        errors = []

        def worker(n: int) -> None:
            try:
                results[n] = [
                    [(d.verdict, d.rule) for d in (g.decide_full(w, t, "thread-%d" % n) for w, t, _, _ in EXPECTED)]
                    for _ in range(25)
                ]
            except BaseException as e:  # noqa: BLE001
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse(any(t.is_alive() for t in threads), "threads hung")
        self.assertEqual(errors, [])
        for n in range(8):
            self.assertEqual(results[n], [single] * 25, n)

    def test_the_gil_is_released_while_deciding(self) -> None:
        # A policy that spins until its deadline (500 ms): while one thread is in it,
        # another Python thread runs. With the GIL held the counter could not move.
        g = self.guard(policy=str(self.ws.loop), timeout_ms=500, fuel=10_000_000_000)
        self.assertEqual(g.policy.name, "live-loop")
        ticks = [0]
        done = threading.Event()

        def count() -> None:
            while not done.is_set():
                ticks[0] += 1
                time.sleep(0.001)

        counter = threading.Thread(target=count)
        counter.start()
        try:
            time.sleep(0.05)
            before = ticks[0]
            d = g.decide_full("B-LOOP", AWAITING)
            during = ticks[0] - before
        finally:
            done.set()
            counter.join()
        self.assertDecision(d, ALLOW, "fail-safe")
        self.assertTrue(d.error.startswith("deadline:"), d.error)
        self.assertGreater(during, 10, "the other thread did not run while the policy spun")


def _child_exit(code: int) -> None:
    os._exit(code)


class TestFork(GuardCase):
    """Each test forks; the child reports through its exit code and a pipe."""

    def fork_and_run(self, child, timeout: float = 60.0) -> dict:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_end)
            code = 0
            try:
                out = child()
            except BaseException as e:  # noqa: BLE001
                out, code = {"raised": repr(e)}, 3
            try:
                os.write(write_end, json.dumps(out).encode())
            finally:
                _child_exit(code)
        os.close(write_end)
        end = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(read_end)
                self.fail("the forked child hung (deadlock?) for %.0f s" % timeout)
            time.sleep(0.02)
        with os.fdopen(read_end, "rb") as f:
            report = json.loads(f.read() or b"{}")
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, report)
        return report

    def test_a_guard_made_before_fork_decides_in_the_child(self) -> None:
        g = self.guard(watch=True)
        self.assertEqual(g.decide("ORCH-CANCEL", AWAITING), SUPPRESS)
        report = self.fork_and_run(lambda: {"verdicts": [g.decide(w, t) for w, t, _, _ in EXPECTED]})
        self.assertEqual(report["verdicts"], [v for _, _, v, _ in EXPECTED])
        # and the parent goes on
        self.assertEqual(g.decide("ORCH-CANCEL", AWAITING), SUPPRESS)
        self.assertTrue(g.watching)

    def test_a_policy_that_loops_forever_is_stopped_by_its_deadline_in_the_child(self) -> None:
        g = self.guard(policy=str(self.ws.loop), timeout_ms=50, fuel=10_000_000_000)
        first = g.decide_full("B-LOOP", AWAITING)
        self.assertTrue(first.error.startswith("deadline:"), first.error)

        def child() -> dict:
            t0 = time.monotonic()
            d = g.decide_full("B-LOOP", AWAITING)
            return {"rule": d.rule, "error": d.error, "seconds": time.monotonic() - t0}

        report = self.fork_and_run(child, timeout=60)
        self.assertEqual(report["rule"], "fail-safe", report)
        self.assertTrue(report["error"].startswith("deadline:"), report)
        self.assertLess(report["seconds"], 10, report)

    def test_a_swap_is_seen_in_the_child(self) -> None:
        g = self.guard(watch=True)
        self.assertEqual(g.policy.version, "1.2.0")
        active, nxt = self.active, self.ws.next

        def child() -> dict:
            replace_file(nxt, active)
            swapped = wait_for(lambda: g.policy.version == "1.1.0", within=20)
            d = g.decide_full("ORCH-FAILED", AWAITING)
            return {"swapped": bool(swapped), "verdict": d.verdict, "rule": d.rule, "watching": g.watching}

        report = self.fork_and_run(child)
        self.assertEqual(report, {"swapped": True, "verdict": SUPPRESS, "rule": "failed", "watching": True})

    def test_deciding_threads_during_fork_do_not_deadlock_the_child(self) -> None:
        g = self.guard(watch=True)
        stop = threading.Event()
        wrong = []

        def hammer() -> None:
            while not stop.is_set():
                if g.decide("ORCH-CANCEL", AWAITING) != SUPPRESS:
                    wrong.append(1)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for _ in range(5):
                report = self.fork_and_run(lambda: {"verdict": g.decide("ORCH-DONE", AWAITING)}, timeout=60)
                self.assertEqual(report, {"verdict": CONVERGE_DONE})
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        self.assertEqual(wrong, [])

    def test_multiprocessing_fork_workers(self) -> None:
        import multiprocessing

        global _POOL_GUARD
        _POOL_GUARD = g = self.guard(watch=True)
        g.decide("ORCH-DONE", AWAITING)
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            got = pool.starmap(_decide_in_worker, [(w, t) for w, t, _, _ in EXPECTED], chunksize=1)
        self.assertEqual(got, [v for _, _, v, _ in EXPECTED])


# The guard a forked pool worker inherits (the fork start method copies this module).
_POOL_GUARD = None


def _decide_in_worker(work_item: str, target: str) -> str:
    return _POOL_GUARD.decide(work_item, target)


class TestOriginalGrid(unittest.TestCase):
    """`from deploy_guard import decide` gives the original's verdicts on the fact grid."""

    def test_the_fact_grid_against_the_original(self) -> None:
        bench = fixtures.find_orch()
        ws = Workspace()
        try:
            for sentinels in (True, False):
                db = ws.root / ("grid-%s.db" % sentinels)
                cases = make_grid_db(db, sentinels)
                for scope in ("", "svc-a"):
                    env = guard_env(
                        DEPLOY_GUARD_DB=str(db), DEPLOY_GUARD_POLICY=str(ws.active), DEPLOY_GUARD_CACHE="off",
                        DEPLOY_STATUS_GUARD_REPOS=scope, DEPLOY_GUARD_SELF_HOSTING_REPOS="orchestrator",
                        DEPLOY_STATUS_GUARD_ENABLED="true", PYTHONPATH=str(bench),
                    )
                    run = subprocess.run([sys.executable, "-c", GRID_SCRIPT, str(db), json.dumps(cases)], env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
                    self.assertEqual(run.returncode, 0, run.stderr.decode(errors="replace"))
                    result = json.loads(run.stdout)
                    self.assertEqual(result["differ"], [], (sentinels, scope))
                    self.assertEqual(result["decided"], len(cases) * 3)
                    # Not a vacuous agreement: the original itself gives every verdict
                    # on this grid, and so do we.
                    self.assertEqual(set(result["theirs"]), {ALLOW, CONVERGE_DONE, SUPPRESS}, (sentinels, scope))
                    self.assertEqual(set(result["verdicts"]), {ALLOW, CONVERGE_DONE, SUPPRESS}, (sentinels, scope))
                    # What the two databases differ by is the window, at verdicts the
                    # original cannot tell apart (its unreadable window is an ALLOW too):
                    # read, it is active for some tasks; without the sentinels table it
                    # is unknown, decided by the policy (window-unknown), never a fail-safe.
                    window_rules = set(result["rules"]) & {"monitoring-window-active", "window-unknown", "fail-safe"}
                    self.assertEqual(window_rules, {"monitoring-window-active"} if sentinels else {"window-unknown"},
                                     (sentinels, scope, result["rules"]))
        finally:
            ws.cleanup()


class TestFindOrch(unittest.TestCase):
    """The original module is looked for beside the clone; absent, its tests skip saying
    what is missing and where, except under CI=true, where they fail."""

    def test_found_beside_the_clone(self) -> None:
        with tempfile.TemporaryDirectory() as bench:
            (Path(bench) / "orch").mkdir()
            (Path(bench) / "orch" / "deploy_status_guard.py").write_text("")
            self.assertEqual(fixtures.find_orch(Path(bench)), Path(bench))
        self.assertEqual(fixtures.ORCH_BENCH, fixtures.REPO_ROOT.parent / "shared" / "bench")

    def test_absent_skips_naming_what_and_where(self) -> None:
        with tempfile.TemporaryDirectory() as bench, mock.patch.dict(os.environ):
            os.environ.pop("CI", None)
            with self.assertRaises(unittest.SkipTest) as raised:
                fixtures.find_orch(Path(bench))
        self.assertIn(str(Path(bench) / "orch" / "deploy_status_guard.py"), str(raised.exception))
        self.assertIn("beside the clone", str(raised.exception))

    def test_absent_fails_under_ci(self) -> None:
        with tempfile.TemporaryDirectory() as bench, mock.patch.dict(os.environ, {"CI": "true"}):
            with self.assertRaises(AssertionError) as raised:
                fixtures.find_orch(Path(bench))
        self.assertIn(str(Path(bench) / "orch" / "deploy_status_guard.py"), str(raised.exception))
        self.assertIn("CI=true", str(raised.exception))


GRID_SCRIPT = textwrap.dedent("""
    import json, logging, sys
    from orch import db as orch_db
    from orch import deploy_status_guard as original
    from deploy_guard import decide, decide_full
    orch_db.use(sys.argv[1])
    logging.disable(logging.CRITICAL)
    differ, verdicts, theirs_seen, rules, decided = [], set(), set(), set(), 0
    for work_item in json.loads(sys.argv[2]):
        for target in ("awaiting", "deploying", "monitoring"):
            ours, theirs = decide(work_item, target), original.decide(work_item, target)
            decided += 1
            verdicts.add(ours)
            theirs_seen.add(theirs)
            rules.add(decide_full(work_item, target).rule)
            if ours != theirs:
                differ.append([work_item, target, ours, theirs])
    print(json.dumps({"differ": differ, "decided": decided, "verdicts": sorted(verdicts),
                      "theirs": sorted(theirs_seen), "rules": sorted(rules)}))
""")


def make_grid_db(path: Path, sentinels: bool) -> list:
    """Tasks for every repo x stage x window of the contract's grid; returns the work items."""
    repos = ["orchestrator", " orchestrator ", "svc-a", "elsewhere", None]
    stages = ["done", "cancelled", "deploy", "failed", "", " done\n", "\tcancelled ", None]
    windows = ["on", "off", "none"]
    conn = sqlite3.connect(str(path))
    items = ["NO-TASK"]
    try:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, work_item_id TEXT, repo TEXT, stage TEXT)")
        if sentinels:
            conn.execute("CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT)")
        for r, repo in enumerate(repos):
            for s, stage in enumerate(stages):
                for window in windows:
                    item = "G-%d-%d-%s" % (r, s, window)
                    items.append(item)
                    conn.execute("INSERT INTO tasks (work_item_id, repo, stage) VALUES (?, ?, ?)", (item, repo, stage))
                    if sentinels and window != "none":
                        conn.execute("INSERT INTO post_deploy_sentinels VALUES (?, ?, 'ARMED')", (repo, item))
                        if window == "off":
                            conn.execute("INSERT INTO post_deploy_sentinels VALUES (?, ?, 'DONE')", (repo, item))
        conn.commit()
    finally:
        conn.close()
    return items


if __name__ == "__main__":
    unittest.main()
