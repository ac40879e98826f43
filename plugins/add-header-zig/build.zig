//! `zig build` -> zig-out/bin/add-header.wasm (proxy-wasm ABI 0.2.1, freestanding wasm32).
//! `zig build test` runs the parser's unit tests natively.
const std = @import("std");

pub fn build(b: *std.Build) void {
    // Small by default: the module is compiled by every Envoy worker that loads it.
    const optimize = b.option(std.builtin.OptimizeMode, "optimize", "Optimization mode (default safe: bounds checks stay on)") orelse .safe;
    const wasm = b.resolveTargetQuery(.{
        .cpu_arch = .wasm32,
        .os_tag = .freestanding,
        // Only features every Envoy V8 of the last years accepts.
        .cpu_model = .{ .explicit = &std.Target.wasm.cpu.mvp },
        .cpu_features_add = std.Target.wasm.featureSet(&.{ .bulk_memory, .mutable_globals, .sign_ext }),
    });
    const exe = b.addExecutable(.{
        .name = "add-header",
        .root_module = b.createModule(.{
            .root_source_file = b.path("src/main.zig"),
            .target = wasm,
            .optimize = optimize,
            .strip = true,
            .single_threaded = true,
        }),
    });
    exe.entry = .disabled; // a reactor: Envoy calls the proxy_on_* exports
    exe.rdynamic = true; // keep every `export fn`
    b.installArtifact(exe);

    const tests = b.addTest(.{
        .root_module = b.createModule(.{
            .root_source_file = b.path("src/tests.zig"),
            .target = b.graph.host,
        }),
    });
    b.step("test", "Run the parser's unit tests natively").dependOn(&b.addRunArtifact(tests).step);
}
