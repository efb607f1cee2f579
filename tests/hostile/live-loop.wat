;; ATTACK: a policy that passes the gate and spins forever on live traffic. It answers
;; ALLOW (rule `live-loop`) on the fact grid and the vectors, whose work items never
;; start with "B", and loops forever (`loop br`) when the work item starts with "B".
;; Only the deadline (or fuel) stops it: the Python tests use it to prove that the
;; epoch ticker is made again in a forked child (clients/python/tests).
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
    ;; work-item-id: non-empty and starting with "B" (0x42) -> spin forever
    (if (i32.and
          (i32.ne (i32.load offset=4 (local.get $facts)) (i32.const 0))
          (i32.eq (i32.load8_u (i32.load (local.get $facts))) (i32.const 0x42)))
      (then (loop $spin (br $spin))))
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 9) "live-loop", version = (96, 5) "9.9.9"
  (data (i32.const 16) "\40\00\00\00\09\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "live-loop")
  (data (i32.const 96) "9.9.9")
  ;; decision: verdict 0 (allow), rule = (160, 9) "live-loop"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\09\00\00\00")
  (data (i32.const 160) "live-loop")
)
