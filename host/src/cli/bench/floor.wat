;; The floor of `deploy-guard bench`: the least a sandboxed call can cost. An empty
;; component with no import, no memory and one function that does nothing, made in a
;; fresh Store and instance and called, by the same engines with the same settings
;; (pooling, fuel, epoch deadline, limits) as a policy. Whatever a policy's decision
;; costs beyond this is the policy's own work and the facts crossing the boundary.
(component
  (core module $empty
    (func (export "nothing")))
  (core instance $instance (instantiate $empty))
  (func (export "nothing") (canon lift (core func $instance "nothing"))))
