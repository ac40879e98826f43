//! add-header as a proxy-wasm module (ABI 0.2.1) with no runtime: the same
//! contract as the Go plugin in plugins/add-header, built to a few KB so
//! Envoy compiles it in milliseconds and each request pays little more than
//! the host calls themselves.
//!
//! Configuration is parsed once per plugin (root context) in
//! proxy_on_configure; a bad one fails the plugin with one CRITICAL line.
//! Per request, only the header host calls run. Nothing is logged per
//! request unless the host refuses a header (error level, as the Go build).
const std = @import("std");
const config = @import("config.zig");

const allocator = std.heap.wasm_allocator;

// -- host functions (module "env") ----------------------------------------------------

extern "env" fn proxy_log(level: u32, message: [*]const u8, len: usize) u32;
extern "env" fn proxy_get_buffer_bytes(buffer: u32, start: usize, max: usize, ret_data: *?[*]u8, ret_len: *usize) u32;
extern "env" fn proxy_add_header_map_value(map: u32, key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize) u32;
extern "env" fn proxy_replace_header_map_value(map: u32, key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize) u32;

const log_error = 4;
const log_critical = 5;
const buffer_plugin_configuration = 7;
const map_request_headers = 0;
const map_response_headers = 2;
const action_continue = 0;

// -- state ------------------------------------------------------------------------------

/// One configured plugin: its rules and the arena they live in.
const Plugin = struct {
    arena: std.heap.ArenaAllocator,
    config: config.Config,
};

/// Root context id -> its configured plugin.
var plugins: std.AutoHashMapUnmanaged(u32, *Plugin) = .empty;

/// HTTP context id -> root context id, from creation to deletion. Envoy numbers
/// contexts in sequence, so a slot indexed by id is nearly always free: the
/// per-request path is two array accesses. A slot still held by an older live
/// stream sends the newcomer to the overflow map; nothing is ever dropped.
const Stream = struct { context: u32 = 0, root: u32 = 0 };
const ring_size = 1024;
var ring: [ring_size]Stream = @splat(.{});
var overflow: std.AutoHashMapUnmanaged(u32, u32) = .empty;

fn log(level: u32, message: []const u8) void {
    _ = proxy_log(level, message.ptr, message.len);
}

/// The Go SDK's error text for a host status (internal.StatusToError).
fn statusText(status: u32, buf: []u8) []const u8 {
    return switch (status) {
        1 => "error status returned by host: not found",
        2 => "error status returned by host: bad argument",
        7 => "error status returned by host: empty",
        8 => "error status returned by host: cas mismatch",
        10 => "error status returned by host: internal failure",
        12 => "error status returned by host: unimplemented",
        else => std.fmt.bufPrint(buf, "unknown status code: {d}", .{status}) catch "unknown status code",
    };
}

fn logJoined(level: u32, parts: []const []const u8) void {
    var buf: [512]u8 = undefined;
    var n: usize = 0;
    for (parts) |p| {
        const take = @min(p.len, buf.len - n);
        @memcpy(buf[n .. n + take], p[0..take]);
        n += take;
    }
    log(level, buf[0..n]);
}

// -- ABI exports ------------------------------------------------------------------------

export fn proxy_abi_version_0_2_1() void {}

var zero_sized: u8 = 0;

export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    if (size == 0) return @ptrCast(&zero_sized);
    const buf = allocator.alloc(u8, size) catch return null;
    return buf.ptr;
}

export fn proxy_on_vm_start(root_context_id: u32, vm_configuration_size: u32) u32 {
    _ = root_context_id;
    _ = vm_configuration_size;
    return 1;
}

export fn proxy_on_context_create(context_id: u32, parent_context_id: u32) void {
    if (parent_context_id == 0) return; // a root context: configured in proxy_on_configure
    const slot = &ring[context_id % ring_size];
    if (slot.context == 0) {
        slot.* = .{ .context = context_id, .root = parent_context_id };
    } else {
        // Out of memory leaves the stream without rules: it passes unchanged.
        overflow.put(allocator, context_id, parent_context_id) catch {};
    }
}

fn rootOf(context_id: u32) ?u32 {
    const slot = ring[context_id % ring_size];
    if (slot.context == context_id) return slot.root;
    return overflow.get(context_id);
}

export fn proxy_on_configure(root_context_id: u32, configuration_size: u32) u32 {
    var data: []const u8 = "";
    var host_buffer: ?[]u8 = null;
    defer if (host_buffer) |b| if (b.len > 0) allocator.free(b);
    if (configuration_size > 0) {
        var ptr: ?[*]u8 = null;
        var len: usize = 0;
        const status = proxy_get_buffer_bytes(buffer_plugin_configuration, 0, std.math.maxInt(i32), &ptr, &len);
        var text: [40]u8 = undefined;
        if (status != 0 or ptr == null) {
            const err = statusText(if (status == 0) 1 else status, &text);
            logJoined(log_critical, &.{ "invalid configuration: cannot read plugin configuration: ", err });
            return 0;
        }
        host_buffer = ptr.?[0..len];
        data = host_buffer.?;
    }

    const plugin = allocator.create(Plugin) catch return outOfMemory();
    plugin.arena = std.heap.ArenaAllocator.init(allocator);
    const result = config.parse(plugin.arena.allocator(), data) catch {
        plugin.arena.deinit();
        allocator.destroy(plugin);
        return outOfMemory();
    };
    switch (result) {
        .err => |message| {
            log(log_critical, message);
            plugin.arena.deinit();
            allocator.destroy(plugin);
            return 0;
        },
        .ok => |cfg| {
            plugin.config = cfg;
            const previous = plugins.fetchPut(allocator, root_context_id, plugin) catch {
                plugin.arena.deinit();
                allocator.destroy(plugin);
                return outOfMemory();
            };
            if (previous) |kv| freePlugin(kv.value);
            return 1;
        },
    }
}

fn outOfMemory() u32 {
    log(log_critical, "invalid configuration: out of memory");
    return 0;
}

fn freePlugin(plugin: *Plugin) void {
    plugin.arena.deinit();
    allocator.destroy(plugin);
}

fn rulesOf(context_id: u32, request: bool) []const config.Rule {
    const root = rootOf(context_id) orelse return &.{};
    const plugin = plugins.get(root) orelse return &.{};
    return if (request) plugin.config.request else plugin.config.response;
}

fn apply(rules: []const config.Rule, map: u32) void {
    for (rules) |r| {
        const status = if (r.set)
            proxy_replace_header_map_value(map, r.name.ptr, r.name.len, r.value.ptr, r.value.len)
        else
            proxy_add_header_map_value(map, r.name.ptr, r.name.len, r.value.ptr, r.value.len);
        if (status != 0) {
            var text: [40]u8 = undefined;
            const side = if (map == map_request_headers) "cannot set request header " else "cannot set response header ";
            logJoined(log_error, &.{ side, r.name, ": ", statusText(status, &text) });
        }
    }
}

export fn proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: u32) u32 {
    _ = headers;
    _ = end_of_stream;
    apply(rulesOf(context_id, true), map_request_headers);
    return action_continue;
}

export fn proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: u32) u32 {
    _ = headers;
    _ = end_of_stream;
    apply(rulesOf(context_id, false), map_response_headers);
    return action_continue;
}

// No proxy_on_done: without it the host takes every context as done at once,
// which is all this plugin would answer, and saves a call per request.

export fn proxy_on_delete(context_id: u32) void {
    const slot = &ring[context_id % ring_size];
    if (slot.context == context_id) {
        slot.context = 0;
        return;
    }
    if (overflow.remove(context_id)) return;
    if (plugins.fetchRemove(context_id)) |kv| freePlugin(kv.value);
}

/// A failed safety check (bounds, overflow) reports itself and traps, which
/// fails this VM in Envoy instead of corrupting memory.
pub const panic = std.debug.FullPanic(struct {
    fn report(message: []const u8, _: ?usize) noreturn {
        logJoined(log_critical, &.{ "add-header: panic: ", message });
        @trap();
    }
}.report);
