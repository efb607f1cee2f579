;; ATTACK: the result of the 1.1.0 world's `monitor.tick`: verdict 2, where the
;; tick-verdict enum has two cases (0 proceed, 1 noop). `decide` answers every stamp
;; (ALLOW, rule `tick-bad-verdict`). Encoded against the real wit/deploy-guard.wit.
;; Expected: loads; a tick question is RunError::InvalidResult (the host never guesses
;; a verdict), a stamp is still answered; the gate refuses it on the fact grid's first
;; tick case (GateError::Grid, invalid-result).
;;
;; The canonical ABI of `tick`: 16 i32 parameters (the flattened tick-facts, see
;; tick-loop.wat), a pointer to (verdict u8 at +0, rule pointer at +4, rule length at +8).
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  ;; A bump allocator: enough for one decision, since every decision gets a fresh instance.
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then unreachable))
    (local.get $ptr))

  (func (export "orchestrator:deploy-guard/policy@1.1.0#decide") (param $facts i32) (result i32)
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.1.0#info") (result i32)
    (i32.const 16))

  (func (export "orchestrator:deploy-guard/monitor@1.1.0#tick")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (i32.const 192))

  ;; info: name = (64, 16) "tick-bad-verdict", version = (96, 5) "1.1.0"
  (data (i32.const 16) "\40\00\00\00\10\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "tick-bad-verdict")
  (data (i32.const 96) "1.1.0")
  ;; decision: verdict 0 (allow), rule = (160, 16) "tick-bad-verdict"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\10\00\00\00")
  (data (i32.const 160) "tick-bad-verdict")
  ;; tick-decision: verdict 2 (no such case), rule = (224, 16) "tick-bad-verdict"
  (data (i32.const 192) "\02\00\00\00\e0\00\00\00\10\00\00\00")
  (data (i32.const 224) "tick-bad-verdict")
)
