;; The wasm floor for a plugin that acts on both directions and keeps per-stream
;; state: floor.wat plus the two callbacks such a plugin cannot do without,
;; proxy_on_request_headers (request-side rules) and proxy_on_delete (forgetting
;; a stream), both empty. Envoy calls each once per request; the difference to
;; floor.wat is what those calls cost.
(module
  (import "env" "proxy_add_header_map_value"
    (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; "x-ingress-header" (16 bytes) at 16, "from tsb ingress gateway" (24 bytes) at 32.
  (data (i32.const 16) "x-ingress-header")
  (data (i32.const 32) "from tsb ingress gateway")
  (global $heap (mut i32) (i32.const 1024))

  (func (export "proxy_abi_version_0_2_1"))

  ;; A bump allocator: the host only asks for memory to hand over buffers.
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (local.get $at) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (local.get $at))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  ;; map 2 = response headers; action 0 = continue.
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add_header (i32.const 2) (i32.const 16) (i32.const 16) (i32.const 32) (i32.const 24)))
    (i32.const 0))

  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_delete") (param i32)))
