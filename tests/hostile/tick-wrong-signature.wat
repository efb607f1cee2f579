;; ATTACK: the interface, in the 1.1.0 world: `tick` with another signature. It takes
;; the work item id alone (`func(work-item-id: string) -> tick-decision`) instead of
;; the tick-facts record; `decide` and `info` are sound. Encoded against
;; wit/tick-wrong-signature.wit, a look-alike of the real 1.1.0 package (same names, one
;; changed function type).
;; Expected: refused at load: LoadError::WrongWorld naming `tick`, never called.
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

  (func (export "orchestrator:deploy-guard/monitor@1.1.0#tick") (param $id i32) (param $id_len i32) (result i32)
    (i32.const 192))

  ;; info: name = (64, 20) "tick-wrong-signature", version = (96, 5) "1.1.0"
  (data (i32.const 16) "\40\00\00\00\14\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "tick-wrong-signature")
  (data (i32.const 96) "1.1.0")
  ;; decision: verdict 0 (allow), rule = (160, 20) "tick-wrong-signature"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\14\00\00\00")
  (data (i32.const 160) "tick-wrong-signature")
  ;; tick-decision: verdict 0 (proceed), rule = (224, 20) "tick-wrong-signature"
  (data (i32.const 192) "\00\00\00\00\e0\00\00\00\14\00\00\00")
  (data (i32.const 224) "tick-wrong-signature")
)
