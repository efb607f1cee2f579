;; CONTROL, not an attack: a well-behaved policy written by hand, ALLOW with the rule
;; `well-behaved` for every stamp. tests/build.rs ships it twice:
;; - its raw bytes (CORE_MODULE): a core module, which the host must refuse because it
;;   is not a component (ATTACK: a core module instead of a component);
;; - encoded as a component of the guard-policy world (WELL_BEHAVED): the gate
;;   must admit it. That proves the harness builds components the host accepts, so the
;;   refusal of every other file here is due to its own hostility alone.
;;
;; The canonical ABI of the world, which every file here follows (or breaks on purpose):
;; - `decide` has more than 16 flat parameters, so the host writes the facts record into
;;   guest memory (allocated with `cabi_realloc`) and passes one pointer; its result has
;;   more than one flat value, so the guest returns a pointer to the decision record:
;;   verdict (u8) at +0, rule pointer at +4, rule length at +8.
;; - `info` returns a pointer to (name ptr, name len, version ptr, version len).
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

  ;; info: name = (64, 12) "well-behaved", version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\0c\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "well-behaved")
  (data (i32.const 96) "1.0.0")
  ;; decision: verdict 0 (allow), rule = (160, 12) "well-behaved"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\0c\00\00\00")
  (data (i32.const 160) "well-behaved")
)
