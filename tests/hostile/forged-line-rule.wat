;; ATTACK: the decision line. `decide` answers ALLOW with a rule that ends the line and
;; forges another, then sends a terminal escape (clear screen):
;; "x\n2026-01-01T00:00:00Z  WARN deploy_guard::decision: verdict=SUPPRESS\1b[2J" (73 bytes,
;; well under the 256-byte cap, valid UTF-8).
;; Expected: every decision is `RunError::InvalidResult` (control characters in the rule),
;; so the gate refuses it on the fact grid; the rule never reaches a log line raw.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

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

  (func (export "orchestrator:deploy-guard/policy@1.0.0#decide") (param $facts i32) (result i32)
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 16) "forged-line-rule", version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\10\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "forged-line-rule")
  (data (i32.const 96) "1.0.0")
  ;; decision: verdict 0 (allow), rule = (160, 73)
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\49\00\00\00")
  (data (i32.const 160) "x\n2026-01-01T00:00:00Z  WARN deploy_guard::decision: verdict=SUPPRESS\1b[2J")
)
