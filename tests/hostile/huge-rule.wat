;; ATTACK: a rule string of 8 MiB ('A' repeated), valid UTF-8 and in bounds: a log flood,
;; or memory pressure on the host that copies it. The contract caps a rule at 256 bytes.
;; `decide` grows its memory by 129 pages and fills 8 MiB of it, so it needs a memory
;; limit above 8 MiB (the default 16 MiB allows it).
;; Expected: RunError::InvalidResult naming the size only: the rule itself never reaches
;; an error message or a log line.
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
    ;; 128 pages of rule, one more page of slack.
    (local.set $start
      (i32.mul (memory.grow (i32.const 129)) (i32.const 65536)))
    (if (i32.lt_s (local.get $start) (i32.const 0))
      (then unreachable))
    (memory.fill (local.get $start) (i32.const 0x41) (i32.const 0x800000))
    (i32.store8 (i32.const 128) (i32.const 0))
    (i32.store (i32.const 132) (local.get $start))
    (i32.store (i32.const 136) (i32.const 0x800000))
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 9) "huge-rule", version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\09\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "huge-rule")
  (data (i32.const 96) "1.0.0")
  ;; the decision record at 128 is written by `decide`.
)
