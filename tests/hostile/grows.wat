;; ATTACK: memory kept alive by a batch. Each decision grows its instance's memory by
;; one page (64 KiB), within any limit, and answers ALLOW, rule `grown`: harmless alone,
;; but a batch whose Store kept every grown instance alive until its end would hold
;; eight of them. tests/tests/hostile.rs (`a_batch_never_keeps_a_grown_instance_alive`)
;; counts the live instances of the pool while a batch runs.
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
    (drop (memory.grow (i32.const 1)))
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 5) "grows", version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\05\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "grows")
  (data (i32.const 96) "1.0.0")
  ;; decision: verdict 0 (allow), rule = (160, 5) "grown"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\05\00\00\00")
  (data (i32.const 160) "grown")
)
