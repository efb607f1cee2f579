;; ATTACK: memory growth past the limit in `decide`: grow the linear memory one page
;; (64 KiB) at a time and write into each new page, forever. If a grow ever answers -1
;; instead of trapping, it hits `unreachable` (the host must report the growth, not that).
;; Expected: RunError::Memory naming the limit.
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
    (local $page i32)
    (loop $more
      (local.set $page (memory.grow (i32.const 1)))
      (if (i32.eq (local.get $page) (i32.const -1))
        (then unreachable))
      (i32.store (i32.mul (local.get $page) (i32.const 65536)) (i32.const 0x686f7374))
      (br $more))
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 13) "memory-growth", version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\0d\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "memory-growth")
  (data (i32.const 96) "1.0.0")
  ;; decision: verdict 0, rule = (160, 13) "memory-growth"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\0d\00\00\00")
  (data (i32.const 160) "memory-growth")
)
