//! The add-header configuration contract, rule for rule and message for
//! message the same as plugins/add-header/config.go (the reference) and pinned
//! by plugins/add-header/testdata/contract.json.
const std = @import("std");
const Allocator = std.mem.Allocator;
const json = @import("json.zig");

pub const Rule = struct {
    name: []const u8,
    value: []const u8,
    /// "set" replaces the header; "add" (the default) appends a value.
    set: bool,
};

pub const Config = struct {
    request: []const Rule,
    response: []const Rule,
};

pub const Result = union(enum) {
    ok: Config,
    /// The whole CRITICAL line, "invalid configuration: ..."
    err: []const u8,
};

const rule_keys = [_][]const u8{ "header", "value", "path", "action" };
const allowed_top = "header, value, path, action, headers";
const allowed_item = "header, value, path, action";

/// Builds one error message; every piece is appended verbatim.
const Message = struct {
    a: Allocator,
    buf: std.ArrayList(u8) = .empty,

    fn add(m: *Message, s: []const u8) Allocator.Error!void {
        try m.buf.appendSlice(m.a, s);
    }

    /// Go's quote() in config.go: double quotes, and \xNN for control bytes,
    /// DEL, quote and backslash so the log line stays one line.
    fn quoted(m: *Message, s: []const u8) Allocator.Error!void {
        const hex = "0123456789abcdef";
        try m.buf.append(m.a, '"');
        for (s) |c| {
            if (c < 0x20 or c == 0x7f or c == '"' or c == '\\') {
                try m.add(&.{ '\\', 'x', hex[c >> 4], hex[c & 0xF] });
            } else try m.buf.append(m.a, c);
        }
        try m.buf.append(m.a, '"');
    }

    fn decimal(m: *Message, n: usize) Allocator.Error!void {
        var digits: [20]u8 = undefined;
        var i: usize = digits.len;
        var v = n;
        while (true) {
            i -= 1;
            digits[i] = @intCast('0' + v % 10);
            v /= 10;
            if (v == 0) break;
        }
        try m.add(digits[i..]);
    }

    fn done(m: *Message) Allocator.Error!Result {
        return .{ .err = try m.buf.toOwnedSlice(m.a) };
    }
};

fn start(a: Allocator) Allocator.Error!Message {
    var m = Message{ .a = a };
    try m.add("invalid configuration: ");
    return m;
}

fn fail(a: Allocator, parts: []const []const u8) Allocator.Error!Result {
    var m = try start(a);
    for (parts) |p| try m.add(p);
    return m.done();
}

fn isRuleKey(key: []const u8) bool {
    for (rule_keys) |k| if (std.mem.eql(u8, k, key)) return true;
    return false;
}

/// The last value of `key`: like most JSON decoders, a repeated key takes its last value.
fn lookup(obj: []const json.Member, key: []const u8) ?[]const u8 {
    var found: ?[]const u8 = null;
    for (obj) |m| if (std.mem.eql(u8, m.key, key)) {
        found = m.value;
    };
    return found;
}

/// isToken in config.go: RFC 9110 token characters (section 5.6.2).
pub fn isToken(s: []const u8) bool {
    for (s) |c| switch (c) {
        'a'...'z', 'A'...'Z', '0'...'9', '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~' => {},
        else => return false,
    };
    return true;
}

/// parseConfig in config.go. Allocates everything in `a` (an arena the
/// caller keeps for the configuration's lifetime or frees on error).
pub fn parse(a: Allocator, data: []const u8) Allocator.Error!Result {
    if (json.isBlank(data)) {
        return fail(a, &.{"configuration is empty; want {\"header\": NAME, \"value\": VALUE} or {\"headers\": [...]}"});
    }
    if (!json.valid(data)) return fail(a, &.{"not valid JSON"});
    const top = try json.members(a, data) orelse return fail(a, &.{"top level must be a JSON object"});

    var request: std.ArrayList(Rule) = .empty;
    var response: std.ArrayList(Rule) = .empty;
    if (lookup(top, "headers")) |raw_list| {
        for (top) |m| {
            if (std.mem.eql(u8, m.key, "headers")) continue;
            var msg = try start(a);
            if (isRuleKey(m.key)) {
                try msg.add("use either \"headers\" or the single-header form, not both (found ");
                try msg.quoted(m.key);
                try msg.add(")");
            } else {
                try msg.add("unknown key ");
                try msg.quoted(m.key);
                try msg.add(" (allowed: " ++ allowed_top ++ ")");
            }
            return msg.done();
        }
        // Go unmarshals null into an empty list: the same error as [].
        const list = try json.items(a, raw_list) orelse &.{};
        if (list.len == 0) return fail(a, &.{"headers: must be a non-empty array of objects"});
        for (list, 0..) |item, i| {
            var prefix = Message{ .a = a };
            try prefix.add("headers[");
            try prefix.decimal(i);
            try prefix.add("]");
            const obj = try json.members(a, item) orelse {
                var msg = try start(a);
                try msg.add(prefix.buf.items);
                try msg.add(": must be an object");
                return msg.done();
            };
            try prefix.add(".");
            switch (try parseRule(a, obj, prefix.buf.items, allowed_item)) {
                .rule => |r| try (if (r.request) &request else &response).append(a, r.rule),
                .err => |e| return .{ .err = e },
            }
        }
    } else {
        switch (try parseRule(a, top, "", allowed_top)) {
            .rule => |r| try (if (r.request) &request else &response).append(a, r.rule),
            .err => |e| return .{ .err = e },
        }
    }
    return .{ .ok = .{ .request = try request.toOwnedSlice(a), .response = try response.toOwnedSlice(a) } };
}

const RuleResult = union(enum) {
    rule: struct { rule: Rule, request: bool },
    err: []const u8,
};

fn ruleFail(a: Allocator, prefix: []const u8, parts: []const []const u8) Allocator.Error!RuleResult {
    var m = try start(a);
    try m.add(prefix);
    for (parts) |p| try m.add(p);
    return .{ .err = (try m.done()).err };
}

/// optionalString in config.go: absent -> null; present but not a string -> error.
const Field = union(enum) { absent, value: []const u8, err: []const u8 };

fn stringField(a: Allocator, obj: []const json.Member, prefix: []const u8, key: []const u8, required: bool) Allocator.Error!Field {
    const raw = lookup(obj, key) orelse {
        if (!required) return .absent;
        return .{ .err = (try ruleFail(a, prefix, &.{ key, ": missing (required)" })).err };
    };
    if (raw.len == 0 or raw[0] != '"') {
        return .{ .err = (try ruleFail(a, prefix, &.{ key, ": must be a string" })).err };
    }
    return .{ .value = try json.unquote(a, raw) };
}

fn parseRule(a: Allocator, obj: []const json.Member, prefix: []const u8, allowed: []const u8) Allocator.Error!RuleResult {
    for (obj) |m| {
        if (isRuleKey(m.key)) continue;
        var msg = try start(a);
        // prefix "headers[0]." is reported as "headers[0]: ".
        if (prefix.len > 0) {
            try msg.add(prefix[0 .. prefix.len - 1]);
            try msg.add(": ");
        }
        try msg.add("unknown key ");
        try msg.quoted(m.key);
        try msg.add(" (allowed: ");
        try msg.add(allowed);
        try msg.add(")");
        return .{ .err = (try msg.done()).err };
    }

    const name = switch (try stringField(a, obj, prefix, "header", true)) {
        .value => |v| v,
        .err => |e| return .{ .err = e },
        .absent => unreachable,
    };
    if (name.len == 0) return ruleFail(a, prefix, &.{"header: must not be empty"});
    if (name[0] == ':' or !isToken(name)) {
        var msg = try start(a);
        try msg.add(prefix);
        try msg.add("header: ");
        try msg.quoted(name);
        try msg.add(if (name[0] == ':') " is a pseudo-header, which cannot be added" else " is not a valid header name (RFC 9110 token characters only)");
        return .{ .err = (try msg.done()).err };
    }

    const value = switch (try stringField(a, obj, prefix, "value", true)) {
        .value => |v| v,
        .err => |e| return .{ .err = e },
        .absent => unreachable,
    };
    for (value) |c| if (c == '\r' or c == '\n' or c == 0) {
        return ruleFail(a, prefix, &.{"value: must not contain CR, LF or NUL"});
    };

    var request = false;
    switch (try stringField(a, obj, prefix, "path", false)) {
        .absent => {},
        .err => |e| return .{ .err = e },
        .value => |path| {
            if (std.mem.eql(u8, path, "request")) {
                request = true;
            } else if (!std.mem.eql(u8, path, "response")) {
                var msg = try start(a);
                try msg.add(prefix);
                try msg.add("path: must be \"request\" or \"response\", got ");
                try msg.quoted(path);
                return .{ .err = (try msg.done()).err };
            }
        },
    }

    var set = false;
    switch (try stringField(a, obj, prefix, "action", false)) {
        .absent => {},
        .err => |e| return .{ .err = e },
        .value => |act| {
            if (std.mem.eql(u8, act, "set")) {
                set = true;
            } else if (!std.mem.eql(u8, act, "add")) {
                var msg = try start(a);
                try msg.add(prefix);
                try msg.add("action: must be \"add\" or \"set\", got ");
                try msg.quoted(act);
                return .{ .err = (try msg.done()).err };
            }
        },
    }
    return .{ .rule = .{ .rule = .{ .name = name, .value = value, .set = set }, .request = request } };
}

test "isToken" {
    for ([_][]const u8{ "x-a", "X_B", "a.b~c", "!#$%&'*+-.^_`|~09azAZ" }) |ok| try std.testing.expect(isToken(ok));
    for ([_][]const u8{ "a b", "a:b", "a\"b", "a(b)", "\xc3\xa9", "a\x7f", "a/b", "a@b", "{a}" }) |bad| try std.testing.expect(!isToken(bad));
}

test "seed form" {
    var arena = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena.deinit();
    const r = try parse(arena.allocator(), "{\"header\": \"x-a\", \"value\": \"v\", \"path\": \"request\", \"action\": \"set\"}");
    try std.testing.expectEqual(@as(usize, 1), r.ok.request.len);
    try std.testing.expect(r.ok.request[0].set);
    try std.testing.expectEqualStrings("x-a", r.ok.request[0].name);
}

test "messages" {
    var arena = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena.deinit();
    const r = try parse(arena.allocator(), "{\"headers\": [{\"header\": \"x-a\", \"value\": \"v\"}, \"x-b\"]}");
    try std.testing.expectEqualStrings("invalid configuration: headers[1]: must be an object", r.err);
}
