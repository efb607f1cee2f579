;; ATTACK: memory across decisions. It counts the decisions its instance has made, at
;; offset 512 of its memory, and answers rule `first` for its instance's first decision
;; and `again` for any later one. With a fresh instance per decision, as the host
;; promises, it says `first` every time: also in a batch, where the instances of
;; several decisions share a Store (LoadedPolicy::rule_many). Always ALLOW, so it
;; passes the gate. tests/tests/hostile.rs (`a_batch_gives_each_decision_a_fresh_instance`).
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
    (i32.store (i32.const 512) (i32.add (i32.load (i32.const 512)) (i32.const 1)))
    (if (result i32) (i32.eq (i32.load (i32.const 512)) (i32.const 1))
      (then (i32.const 128))
      (else (i32.const 144))))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 9) "remembers", version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\09\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "remembers")
  (data (i32.const 96) "1.0.0")
  ;; decision: verdict 0 (allow), rule = (160, 5) "first"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\05\00\00\00")
  ;; decision: verdict 0 (allow), rule = (176, 5) "again"
  (data (i32.const 144) "\00\00\00\00\b0\00\00\00\05\00\00\00")
  (data (i32.const 160) "first")
  (data (i32.const 176) "again")
)
