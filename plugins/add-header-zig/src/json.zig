//! The slice of JSON the add-header contract needs, with Go's encoding/json
//! semantics (the reference implementation is plugins/add-header/config.go):
//!
//!   - `valid` is json.Valid: RFC 8259 grammar, bytes >= 0x20 (even invalid
//!     UTF-8) allowed in strings, nesting deeper than 10000 rejected;
//!   - `members` walks an object in document order, keys decoded, values raw
//!     (json.Decoder.Token + json.RawMessage);
//!   - `items` splits an array into raw values ([]json.RawMessage);
//!   - `unquote` decodes a string literal the way Go does, invalid UTF-8 and
//!     unpaired surrogates becoming U+FFFD.
//!
//! Only `valid` looks at untrusted bytes; the other functions are called on
//! input that `valid` accepted, and still never index past the end.
const std = @import("std");
const Allocator = std.mem.Allocator;

/// Go's scanner refuses more than this many open arrays/objects.
pub const max_depth = 10000;

fn isWs(c: u8) bool {
    return c == ' ' or c == '\t' or c == '\n' or c == '\r';
}

fn skipWs(s: []const u8, start: usize) usize {
    var i = start;
    while (i < s.len and isWs(s[i])) i += 1;
    return i;
}

fn isHex(c: u8) bool {
    return (c >= '0' and c <= '9') or (c >= 'a' and c <= 'f') or (c >= 'A' and c <= 'F');
}

fn isDigit(c: u8) bool {
    return c >= '0' and c <= '9';
}

/// End (one past the closing quote) of the string starting at s[i] == '"', or null.
fn scanString(s: []const u8, start: usize) ?usize {
    var i = start + 1;
    while (i < s.len) {
        const c = s[i];
        if (c == '"') return i + 1;
        if (c < 0x20) return null;
        if (c == '\\') {
            if (i + 1 >= s.len) return null;
            switch (s[i + 1]) {
                '"', '\\', '/', 'b', 'f', 'n', 'r', 't' => i += 2,
                'u' => {
                    if (i + 6 > s.len) return null;
                    for (s[i + 2 .. i + 6]) |h| if (!isHex(h)) return null;
                    i += 6;
                },
                else => return null,
            }
        } else i += 1;
    }
    return null;
}

fn scanNumber(s: []const u8, start: usize) ?usize {
    var i = start;
    if (i < s.len and s[i] == '-') i += 1;
    if (i >= s.len) return null;
    if (s[i] == '0') {
        i += 1;
    } else if (s[i] >= '1' and s[i] <= '9') {
        while (i < s.len and isDigit(s[i])) i += 1;
    } else return null;
    if (i < s.len and s[i] == '.') {
        i += 1;
        if (i >= s.len or !isDigit(s[i])) return null;
        while (i < s.len and isDigit(s[i])) i += 1;
    }
    if (i < s.len and (s[i] == 'e' or s[i] == 'E')) {
        i += 1;
        if (i < s.len and (s[i] == '+' or s[i] == '-')) i += 1;
        if (i >= s.len or !isDigit(s[i])) return null;
        while (i < s.len and isDigit(s[i])) i += 1;
    }
    return i;
}

fn scanLiteral(s: []const u8, start: usize, lit: []const u8) ?usize {
    if (s.len - start < lit.len) return null;
    if (!std.mem.eql(u8, s[start .. start + lit.len], lit)) return null;
    return start + lit.len;
}

/// Open containers while validating: one bit each (1 = object), so the
/// deepest legal document needs 1250 bytes, kept off the wasm stack.
var open_bits: [max_depth / 8 + 1]u8 = undefined;

/// json.Valid: the whole of `s` is one JSON value with optional whitespace around it.
pub fn valid(s: []const u8) bool {
    var depth: usize = 0;
    var i = skipWs(s, 0);
    value: while (true) {
        // A value starts at s[i].
        if (i >= s.len) return false;
        switch (s[i]) {
            '{', '[' => |open| {
                if (depth == max_depth) return false;
                const is_object = open == '{';
                const bit: u8 = @as(u8, 1) << @intCast(depth % 8);
                if (is_object) open_bits[depth / 8] |= bit else open_bits[depth / 8] &= ~bit;
                depth += 1;
                i = skipWs(s, i + 1);
                if (i >= s.len) return false;
                if (s[i] == (if (is_object) @as(u8, '}') else ']')) {
                    depth -= 1;
                    i += 1;
                } else if (is_object) {
                    i = objectKey(s, i) orelse return false;
                    continue :value;
                } else continue :value;
            },
            '"' => i = scanString(s, i) orelse return false,
            't' => i = scanLiteral(s, i, "true") orelse return false,
            'f' => i = scanLiteral(s, i, "false") orelse return false,
            'n' => i = scanLiteral(s, i, "null") orelse return false,
            else => i = scanNumber(s, i) orelse return false,
        }
        // After a value: close containers, or go on to the next member.
        while (true) {
            i = skipWs(s, i);
            if (depth == 0) return i == s.len;
            if (i >= s.len) return false;
            const in_object = open_bits[(depth - 1) / 8] & (@as(u8, 1) << @intCast((depth - 1) % 8)) != 0;
            const close: u8 = if (in_object) '}' else ']';
            if (s[i] == close) {
                depth -= 1;
                i += 1;
                continue;
            }
            if (s[i] != ',') return false;
            i = skipWs(s, i + 1);
            if (in_object) i = objectKey(s, i) orelse return false;
            continue :value;
        }
    }
}

/// At a member's key: scans `"key" :` and returns where the value starts.
fn objectKey(s: []const u8, start: usize) ?usize {
    if (start >= s.len or s[start] != '"') return null;
    var i = scanString(s, start) orelse return null;
    i = skipWs(s, i);
    if (i >= s.len or s[i] != ':') return null;
    return skipWs(s, i + 1);
}

/// End of the (valid) value starting at s[start].
fn skipValue(s: []const u8, start: usize) usize {
    var i = start;
    if (i >= s.len) return i;
    switch (s[i]) {
        '"' => return scanString(s, i) orelse s.len,
        '{', '[' => {
            var depth: usize = 0;
            while (i < s.len) {
                switch (s[i]) {
                    '"' => {
                        i = scanString(s, i) orelse return s.len;
                        continue;
                    },
                    '{', '[' => depth += 1,
                    '}', ']' => {
                        depth -= 1;
                        if (depth == 0) return i + 1;
                    },
                    else => {},
                }
                i += 1;
            }
            return i;
        },
        else => {
            while (i < s.len and !isWs(s[i]) and s[i] != ',' and s[i] != '}' and s[i] != ']') i += 1;
            return i;
        },
    }
}

pub const Member = struct {
    key: []const u8,
    value: []const u8,
};

/// The members of the object `raw` (a valid JSON value) in document order,
/// or null when `raw` is not an object.
pub fn members(a: Allocator, raw: []const u8) Allocator.Error!?[]Member {
    var i = skipWs(raw, 0);
    if (i >= raw.len or raw[i] != '{') return null;
    var out: std.ArrayList(Member) = .empty;
    i = skipWs(raw, i + 1);
    while (i < raw.len and raw[i] == '"') {
        const key_end = scanString(raw, i) orelse break;
        const key = try unquote(a, raw[i..key_end]);
        i = skipWs(raw, key_end);
        if (i >= raw.len or raw[i] != ':') break;
        i = skipWs(raw, i + 1);
        const value_end = skipValue(raw, i);
        try out.append(a, .{ .key = key, .value = raw[i..value_end] });
        i = skipWs(raw, value_end);
        if (i >= raw.len or raw[i] != ',') break;
        i = skipWs(raw, i + 1);
    }
    return try out.toOwnedSlice(a);
}

/// The raw items of the array `raw` (a valid JSON value), or null when it is not an array.
pub fn items(a: Allocator, raw: []const u8) Allocator.Error!?[]const []const u8 {
    var i = skipWs(raw, 0);
    if (i >= raw.len or raw[i] != '[') return null;
    var out: std.ArrayList([]const u8) = .empty;
    i = skipWs(raw, i + 1);
    while (i < raw.len and raw[i] != ']') {
        const end = skipValue(raw, i);
        if (end == i) break;
        try out.append(a, raw[i..end]);
        i = skipWs(raw, end);
        if (i >= raw.len or raw[i] != ',') break;
        i = skipWs(raw, i + 1);
    }
    return try out.toOwnedSlice(a);
}

const replacement = "\xef\xbf\xbd"; // U+FFFD

fn hexValue(h: []const u8) u21 {
    var v: u21 = 0;
    for (h) |c| {
        const d: u21 = switch (c) {
            '0'...'9' => c - '0',
            'a'...'f' => c - 'a' + 10,
            'A'...'F' => c - 'A' + 10,
            else => 0,
        };
        v = v * 16 + d;
    }
    return v;
}

/// \uXXXX at s[i..], or null.
fn escapedUnit(s: []const u8, i: usize) ?u21 {
    if (i + 6 > s.len or s[i] != '\\' or s[i + 1] != 'u') return null;
    for (s[i + 2 .. i + 6]) |h| if (!isHex(h)) return null;
    return hexValue(s[i + 2 .. i + 6]);
}

fn appendRune(a: Allocator, out: *std.ArrayList(u8), r: u21) Allocator.Error!void {
    var buf: [4]u8 = undefined;
    const n: usize = if (r < 0x80) blk: {
        buf[0] = @intCast(r);
        break :blk 1;
    } else if (r < 0x800) blk: {
        buf[0] = @intCast(0xC0 | (r >> 6));
        buf[1] = @intCast(0x80 | (r & 0x3F));
        break :blk 2;
    } else if (r < 0x10000) blk: {
        buf[0] = @intCast(0xE0 | (r >> 12));
        buf[1] = @intCast(0x80 | ((r >> 6) & 0x3F));
        buf[2] = @intCast(0x80 | (r & 0x3F));
        break :blk 3;
    } else blk: {
        buf[0] = @intCast(0xF0 | (r >> 18));
        buf[1] = @intCast(0x80 | ((r >> 12) & 0x3F));
        buf[2] = @intCast(0x80 | ((r >> 6) & 0x3F));
        buf[3] = @intCast(0x80 | (r & 0x3F));
        break :blk 4;
    };
    try out.appendSlice(a, buf[0..n]);
}

/// Length of the valid UTF-8 sequence at s[i..], as Go's utf8.DecodeRune
/// accepts it (no overlongs, no surrogates, at most U+10FFFF), or 0 if invalid.
pub fn utf8SequenceLen(s: []const u8, i: usize) usize {
    const c = s[i];
    if (c < 0x80) return 1;
    const n: usize, const lo: u8, const hi: u8 = switch (c) {
        0xC2...0xDF => .{ 2, 0x80, 0xBF },
        0xE0 => .{ 3, 0xA0, 0xBF },
        0xE1...0xEC, 0xEE, 0xEF => .{ 3, 0x80, 0xBF },
        0xED => .{ 3, 0x80, 0x9F },
        0xF0 => .{ 4, 0x90, 0xBF },
        0xF1...0xF3 => .{ 4, 0x80, 0xBF },
        0xF4 => .{ 4, 0x80, 0x8F },
        else => return 0,
    };
    if (s.len - i < n) return 0;
    if (s[i + 1] < lo or s[i + 1] > hi) return 0;
    for (s[i + 2 .. i + n]) |cc| if (cc < 0x80 or cc > 0xBF) return 0;
    return n;
}

/// Decodes the (valid) string literal `raw`, quotes included.
pub fn unquote(a: Allocator, raw: []const u8) Allocator.Error![]const u8 {
    if (raw.len < 2) return "";
    const s = raw[1 .. raw.len - 1];
    var out: std.ArrayList(u8) = .empty;
    try out.ensureTotalCapacity(a, s.len);
    var i: usize = 0;
    while (i < s.len) {
        const c = s[i];
        if (c == '\\' and i + 1 < s.len) {
            const e = s[i + 1];
            switch (e) {
                'b' => try out.append(a, 8),
                'f' => try out.append(a, 12),
                'n' => try out.append(a, '\n'),
                'r' => try out.append(a, '\r'),
                't' => try out.append(a, '\t'),
                'u' => {
                    const r = escapedUnit(s, i) orelse return try out.toOwnedSlice(a);
                    i += 6;
                    if (r >= 0xD800 and r < 0xE000) {
                        // A high surrogate followed by a low one is one code point;
                        // anything else is U+FFFD and the next escape stands alone.
                        if (r < 0xDC00) {
                            if (escapedUnit(s, i)) |r2| {
                                if (r2 >= 0xDC00 and r2 < 0xE000) {
                                    i += 6;
                                    try appendRune(a, &out, 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00));
                                    continue;
                                }
                            }
                        }
                        try out.appendSlice(a, replacement);
                    } else try appendRune(a, &out, r);
                    continue;
                },
                else => try out.append(a, e), // '"', '\\', '/'
            }
            i += 2;
        } else if (c < 0x80) {
            try out.append(a, c);
            i += 1;
        } else {
            const n = utf8SequenceLen(s, i);
            if (n == 0) {
                try out.appendSlice(a, replacement);
                i += 1;
            } else {
                try out.appendSlice(a, s[i .. i + n]);
                i += n;
            }
        }
    }
    return try out.toOwnedSlice(a);
}

/// Go's len(bytes.TrimSpace(data)) == 0: every rune is Unicode white space.
pub fn isBlank(s: []const u8) bool {
    var i: usize = 0;
    while (i < s.len) {
        const n = utf8SequenceLen(s, i);
        if (n == 0) return false;
        if (!isSpaceRune(decodeRune(s[i .. i + n]))) return false;
        i += n;
    }
    return true;
}

fn decodeRune(seq: []const u8) u21 {
    return switch (seq.len) {
        1 => seq[0],
        2 => (@as(u21, seq[0] & 0x1F) << 6) | (seq[1] & 0x3F),
        3 => (@as(u21, seq[0] & 0x0F) << 12) | (@as(u21, seq[1] & 0x3F) << 6) | (seq[2] & 0x3F),
        else => (@as(u21, seq[0] & 0x07) << 18) | (@as(u21, seq[1] & 0x3F) << 12) |
            (@as(u21, seq[2] & 0x3F) << 6) | (seq[3] & 0x3F),
    };
}

/// Go's unicode.IsSpace (the Unicode White_Space property).
fn isSpaceRune(r: u21) bool {
    return switch (r) {
        '\t', '\n', 0x0B, 0x0C, '\r', ' ', 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000 => true,
        else => false,
    };
}

test "valid follows json.Valid" {
    const good = [_][]const u8{ "{}", " [ ] ", "0", "-0.5e+3", "\"\\u00e9\\/\"", "{\"a\":[1,{\"b\":null}]}", "\"\xff\"", "true" };
    for (good) |s| try std.testing.expect(valid(s));
    const bad = [_][]const u8{ "", "{", "{\"a\" 1}", "[1,]", "01", "-", "1.", "\"\\x\"", "\"a\nb\"", "tru", "{} {}", "\x0b{}", "[\"a\",]", "{\"a\":1,}" };
    for (bad) |s| try std.testing.expect(!valid(s));
}

test "depth limit is Go's" {
    const a = std.testing.allocator;
    const deep_ok = try a.alloc(u8, 2 * max_depth);
    defer a.free(deep_ok);
    @memset(deep_ok[0..max_depth], '[');
    @memset(deep_ok[max_depth..], ']');
    try std.testing.expect(valid(deep_ok));
    const too_deep = try a.alloc(u8, 2 * max_depth + 2);
    defer a.free(too_deep);
    @memset(too_deep[0 .. max_depth + 1], '[');
    @memset(too_deep[max_depth + 1 ..], ']');
    try std.testing.expect(!valid(too_deep));
}

test "unquote matches Go" {
    var arena = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    try std.testing.expectEqualStrings("x\na", try unquote(a, "\"x\\na\""));
    try std.testing.expectEqualStrings("\xef\xbf\xbd", try unquote(a, "\"\xff\""));
    try std.testing.expectEqualStrings("\xf0\x9f\x98\x80", try unquote(a, "\"\\ud83d\\ude00\""));
    try std.testing.expectEqualStrings("\xef\xbf\xbdA", try unquote(a, "\"\\ud83d\\u0041\""));
    try std.testing.expectEqualStrings("\xef\xbf\xbd\xef\xbf\xbd", try unquote(a, "\"\xed\xa0\""));
}
