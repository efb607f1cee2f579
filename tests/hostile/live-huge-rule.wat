;; ATTACK: a policy that passes the gate and then answers live traffic with a rule of
;; 8 MiB ('A' repeated): a log flood through the decision line. On the fact grid and
;; the vectors (whose work items never start with "B") it answers ALLOW, rule
;; `live-huge-rule`; when the work item starts with "B" it grows its memory by 129
;; pages and returns 8 MiB of 'A' as the rule (as huge-rule.wat does for every call).
;; Expected: it goes live; the "B" decision is a fail-safe ALLOW whose error is
;; `invalid-result:` naming the size only, and the rule never reaches a log line
;; (tests/tests/hostile.rs reads the decision line of a `deploy-guard decide` run).
;;
;; The facts record arrives through memory (see well-behaved.wat): its first field,
;; `work-item-id`, is (pointer, length) at offset 0.
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
    (local $start i32)
    ;; work-item-id: non-empty and starting with "B" (0x42) -> the 8 MiB rule
    (if (i32.and
          (i32.ne (i32.load offset=4 (local.get $facts)) (i32.const 0))
          (i32.eq (i32.load8_u (i32.load (local.get $facts))) (i32.const 0x42)))
      (then
        ;; 128 pages of rule, one more page of slack.
        (local.set $start
          (i32.mul (memory.grow (i32.const 129)) (i32.const 65536)))
        (if (i32.lt_s (local.get $start) (i32.const 0))
          (then unreachable))
        (memory.fill (local.get $start) (i32.const 0x41) (i32.const 0x800000))
        ;; decision at 192: verdict 0 (allow), rule = (start, 8 MiB)
        (i32.store8 (i32.const 192) (i32.const 0))
        (i32.store (i32.const 196) (local.get $start))
        (i32.store (i32.const 200) (i32.const 0x800000))
        (return (i32.const 192))))
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 14) "live-huge-rule", version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\0e\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "live-huge-rule")
  (data (i32.const 96) "1.0.0")
  ;; decision: verdict 0 (allow), rule = (160, 14) "live-huge-rule"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\0e\00\00\00")
  (data (i32.const 160) "live-huge-rule")
)
