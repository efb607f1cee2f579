;; ATTACK: time, in the 1.1.0 world's `monitor.tick`: `decide` answers every stamp
;; (ALLOW, rule `tick-loop`), `tick` spins forever without touching memory. A policy
;; of the 1.1.0 world, encoded against the real wit/deploy-guard.wit.
;; Expected: loads (loading never calls `tick`); the gate refuses it on the fact grid's
;; first tick case (GateError::Grid, "tick ...", fuel); through LoadedPolicy::rule, a tick
;; question is RunError::Fuel with the default limits, RunError::Deadline with a huge
;; fuel and a short deadline, and a stamp is still answered.
;;
;; The canonical ABI of `tick`: its tick-facts record flattens to exactly 16 core
;; values (work-item-id 2, caller 3, task 5, window-active 2, scope-repos 2,
;; self-hosting-repos 2), so they are passed as 16 i32 parameters, not through memory as
;; `decide`'s 17; its result is a pointer to the tick-decision record: verdict (u8) at
;; +0 (0 proceed, 1 noop), rule pointer at +4, rule length at +8.
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
    (loop $spin
      (br $spin))
    (i32.const 192))

  ;; info: name = (64, 9) "tick-loop", version = (96, 5) "1.1.0"
  (data (i32.const 16) "\40\00\00\00\09\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "tick-loop")
  (data (i32.const 96) "1.1.0")
  ;; decision: verdict 0 (allow), rule = (160, 9) "tick-loop"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\09\00\00\00")
  (data (i32.const 160) "tick-loop")
  ;; tick-decision (never returned): verdict 0 (proceed), rule = (224, 9) "tick-loop"
  (data (i32.const 192) "\00\00\00\00\e0\00\00\00\09\00\00\00")
  (data (i32.const 224) "tick-loop")
)
