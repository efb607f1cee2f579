;; ATTACK: the identity in the log. `info` answers the name "deploy-status-guard" followed
;; by a zero-width space (U+200B, bytes e2 80 8b) and the version "1.0.0": printed, it
;; reads exactly like the reference policy's identity `deploy-status-guard@1.0.0`.
;; Expected: refused at load (`LoadError::Info`), naming control or format characters;
;; never live. Otherwise it decides like `well-behaved.wat` (ALLOW for every stamp).
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
    (i32.const 128))

  (func (export "orchestrator:deploy-guard/policy@1.0.0#info") (result i32)
    (i32.const 16))

  ;; info: name = (64, 22) "deploy-status-guard" U+200B, version = (96, 5) "1.0.0"
  (data (i32.const 16) "\40\00\00\00\16\00\00\00\60\00\00\00\05\00\00\00")
  (data (i32.const 64) "deploy-status-guard\e2\80\8b")
  (data (i32.const 96) "1.0.0")
  ;; decision: verdict 0 (allow), rule = (160, 12) "well-behaved"
  (data (i32.const 128) "\00\00\00\00\a0\00\00\00\0c\00\00\00")
  (data (i32.const 160) "well-behaved")
)
