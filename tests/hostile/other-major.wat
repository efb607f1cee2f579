;; ATTACK: the version line: a policy of `orchestrator:deploy-guard@2.0.0`, whose types
;; and functions are, to the character, those of 1.0.0: only the major version differs
;; (encoded against wit/other-major.wit). A host of the 1.x line must not call it at
;; all: a 2.0.0 `decide` may mean something else with the same shape.
;; Every way in traps, so that a host that called anything would fail otherwise than
;; with the refusal expected: the start function, `decide` and `info` are
;; `unreachable`.
;; Expected: refused at load: LoadError::WrongWorld naming the version line
;; (`orchestrator:deploy-guard/policy@2.0.0`, "another version line").
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

  (func $start
    unreachable)
  (start $start)

  (func (export "orchestrator:deploy-guard/policy@2.0.0#decide") (param $facts i32) (result i32)
    unreachable)

  (func (export "orchestrator:deploy-guard/policy@2.0.0#info") (result i32)
    unreachable)
)
