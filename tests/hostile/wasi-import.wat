;; ATTACK: an import of a WASI interface (`wasi:random/random@0.2.0`), to make `decide`
;; nondeterministic. Encoded against the world `guard-policy-with-wasi` of
;; wit/wasi-import.wit: the guard-policy world plus that import.
;; Expected: refused at load: LoadError::Imports naming `wasi:random/random@0.2.0`.
(module
  (import "wasi:random/random@0.2.0" "get-random-u64" (func $random (result i64)))
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
    ;; SUPPRESS or ALLOW at random.
    (i32.store8 (i32.const 128)
      (i32.wrap_i64 (i64.and (call $random) (i64.const 2))))
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 11) "wasi-import", version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\0b\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "wasi-import")
  (data (i32.const 96) "1.0.0")
  ;; decision: verdict 0, rule = (160, 11) "wasi-import"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\0b\00\00\00")
  (data (i32.const 160) "wasi-import")
)
