;; ATTACK: every class of live failure, on demand. Sound on the fact grid (its work
;; item is "GRID-1") like live-trap.wat, so it passes the gate and can go live; then the
;; first byte of the work item picks the failure:
;;   "F..."  an endless `loop br`                      -> fuel, or deadline when the
;;           fuel outlasts the deadline (wasmtime charges bulk memory ops per byte,
;;           so only the limits choose between the two)
;;   "M..."  `memory.grow` 1 MiB at a time, forever     -> memory
;;   "T..."  `unreachable`                              -> trap
;;   "I..."  verdict 7 of a 3-case enum                 -> invalid-result
;; anything else: ALLOW, rule `live-classes`. tests/tests/metrics.rs counts each class
;; in a running `serve`; ten failures after its swap roll it back (its probation).
;;
;; The facts record arrives through memory (see well-behaved.wat): its first field,
;; `work-item-id`, is (pointer, length) at offset 0.
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
    (local $first i32)
    (if (i32.eqz (i32.load offset=4 (local.get $facts)))
      (then (return (i32.const 128))))
    (local.set $first (i32.load8_u (i32.load (local.get $facts))))
    ;; "F": fuel
    (if (i32.eq (local.get $first) (i32.const 0x46))
      (then (loop $forever (br $forever))))
    ;; "M": memory
    (if (i32.eq (local.get $first) (i32.const 0x4d))
      (then
        (loop $grow
          (drop (memory.grow (i32.const 16)))
          (br $grow))))
    ;; "T": trap
    (if (i32.eq (local.get $first) (i32.const 0x54))
      (then unreachable))
    ;; "I": invalid result
    (if (i32.eq (local.get $first) (i32.const 0x49))
      (then (return (i32.const 192))))
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 12) "live-classes", version = (96, 5) "9.9.9"
  (data (i32.const 16) "\40\00\00\00\0c\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "live-classes")
  (data (i32.const 96) "9.9.9")
  ;; decision: verdict 0 (allow), rule = (160, 12) "live-classes"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\0c\00\00\00")
  (data (i32.const 160) "live-classes")
  ;; decision: verdict 7 (no such case), rule = (160, 12)
  (data (i32.const 192) "\07\00\00\00\a0\00\00\00\0c\00\00\00")
)
