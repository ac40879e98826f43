//! Native unit tests of the parser (`zig build test`); the ABI glue in
//! main.zig is tested through real Envoy and the Python host.
test {
    _ = @import("json.zig");
    _ = @import("config.zig");
}
