;; ATTACK: a result with an out-of-range enum case: verdict 7, where the enum has three
;; cases (0 allow, 1 converge-done, 2 suppress).
;; Expected: RunError::InvalidResult (the host never guesses a verdict).
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

  (func (export "orchestrator:deploy-guard/policy@1.0.0#decide") (param $facts i32) (result i32)
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 8) "bad-enum", version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\08\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "bad-enum")
  (data (i32.const 96) "1.0.0")
  ;; decision: verdict 7 (no such case), rule = (160, 8) "bad-enum"
  (data (i32.const 128) "\07\00\00\00\a0\00\00\00\08\00\00\00")
  (data (i32.const 160) "bad-enum")
)
