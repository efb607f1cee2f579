;; ATTACK: the gate's blind spot, in the 1.1.0 world's `monitor.tick`: sound on the
;; whole fact grid (every stamp ALLOW, every tick PROCEED, rule `tick-live-trap`), but
;; `tick` hits `unreachable` when the work item starts with "B". Encoded against the
;; real wit/deploy-guard.wit.
;; Expected: admitted; after a swap from a policy of the 1.0.0 world, ten failing ticks
;; on probation roll the host back to it (tests/tests/worlds.rs): ticks failing count
;; against a policy as stamps do.
;;
;; The canonical ABI of `tick`: 16 i32 parameters (the flattened tick-facts, see
;; tick-loop.wat); the first two are the work item's pointer and length.
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
    (param $id i32) (param $id_len i32)
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (if (i32.and
          (i32.gt_u (local.get $id_len) (i32.const 0))
          (i32.eq (i32.load8_u (local.get $id)) (i32.const 0x42)))
      (then unreachable))
    (i32.const 192))

  ;; info: name = (64, 14) "tick-live-trap", version = (96, 5) "1.1.0"
  (data (i32.const 16) "\40\00\00\00\0e\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "tick-live-trap")
  (data (i32.const 96) "1.1.0")
  ;; decision: verdict 0 (allow), rule = (160, 14) "tick-live-trap"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\0e\00\00\00")
  (data (i32.const 160) "tick-live-trap")
  ;; tick-decision: verdict 0 (proceed), rule = (224, 14) "tick-live-trap"
  (data (i32.const 192) "\00\00\00\00\e0\00\00\00\0e\00\00\00")
  (data (i32.const 224) "tick-live-trap")
)
