package main

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// The configuration contract is documented in CONTRACT.md and pinned by
// testdata/contract.json, which every implementation of add-header (this one,
// the Zig one, and the Python host tests) must pass byte for byte.
//
// The JSON it needs is read by the small scanner in json.go rather than
// encoding/json: the reflection behind encoding/json was a third of the
// module, and the module's size is what Envoy pays at start (V8 compiles it).
// config_reference_test.go keeps the encoding/json version as the oracle
// this one is fuzzed against.

type direction int

const (
	toResponse direction = iota
	toRequest
)

type action int

const (
	actionAdd action = iota
	actionSet
)

type headerRule struct {
	name   string
	value  string
	path   direction
	action action
}

// pluginConfig holds the rules split by direction so the per-request path only
// walks the rules that apply to it.
type pluginConfig struct {
	request  []headerRule
	response []headerRule
}

type configError struct{ msg string }

func (e *configError) Error() string { return "invalid configuration: " + e.msg }

func fail(parts ...string) error {
	return &configError{msg: strings.Join(parts, "")}
}

var ruleKeys = []string{"header", "value", "path", "action"}

// parseConfig validates and compiles the plugin configuration. It never
// panics; every failure is a *configError naming the field at fault.
func parseConfig(data []byte) (*pluginConfig, error) {
	if isBlank(data) {
		return nil, fail(`configuration is empty; want {"header": NAME, "value": VALUE} or {"headers": [...]}`)
	}
	if !validJSON(data) {
		return nil, fail("not valid JSON")
	}
	top, ok := objectMembers(data)
	if !ok {
		return nil, fail("top level must be a JSON object")
	}
	cfg := &pluginConfig{}
	if rawList, isList := lookup(top, "headers"); isList {
		for _, kv := range top {
			if kv.key != "headers" {
				if contains(ruleKeys, kv.key) {
					return nil, fail(`use either "headers" or the single-header form, not both (found `, quote(kv.key), ")")
				}
				return nil, fail("unknown key ", quote(kv.key), " (allowed: header, value, path, action, headers)")
			}
		}
		// null reads as an empty list, as encoding/json unmarshals it.
		items, _ := arrayItems(rawList)
		if len(items) == 0 {
			return nil, fail(`headers: must be a non-empty array of objects`)
		}
		for i, item := range items {
			index := "headers[" + strconv.Itoa(i) + "]"
			obj, ok := objectMembers(item)
			if !ok {
				return nil, fail(index, ": must be an object")
			}
			rule, err := parseRule(obj, index+".", "header, value, path, action")
			if err != nil {
				return nil, err
			}
			cfg.add(rule)
		}
		return cfg, nil
	}
	rule, err := parseRule(top, "", "header, value, path, action, headers")
	if err != nil {
		return nil, err
	}
	cfg.add(rule)
	return cfg, nil
}

func (c *pluginConfig) add(r headerRule) {
	if r.path == toRequest {
		c.request = append(c.request, r)
	} else {
		c.response = append(c.response, r)
	}
}

func parseRule(obj []keyValue, prefix, allowed string) (headerRule, error) {
	rule := headerRule{path: toResponse, action: actionAdd}
	for _, kv := range obj {
		if !contains(ruleKeys, kv.key) {
			where := strings.TrimSuffix(prefix, ".")
			if where != "" {
				where += ": "
			}
			return rule, fail(where, "unknown key ", quote(kv.key), " (allowed: ", allowed, ")")
		}
	}

	name, err := requiredString(obj, prefix, "header")
	if err != nil {
		return rule, err
	}
	if name == "" {
		return rule, fail(prefix, "header: must not be empty")
	}
	if name[0] == ':' {
		return rule, fail(prefix, "header: ", quote(name), " is a pseudo-header, which cannot be added")
	}
	if !isToken(name) {
		return rule, fail(prefix, "header: ", quote(name), " is not a valid header name (RFC 9110 token characters only)")
	}
	rule.name = name

	value, err := requiredString(obj, prefix, "value")
	if err != nil {
		return rule, err
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return rule, fail(prefix, "value: must not contain CR, LF or NUL")
	}
	rule.value = value

	if path, present, err := optionalString(obj, prefix, "path"); err != nil {
		return rule, err
	} else if present {
		switch path {
		case "request":
			rule.path = toRequest
		case "response":
			rule.path = toResponse
		default:
			return rule, fail(prefix, `path: must be "request" or "response", got `, quote(path))
		}
	}

	if act, present, err := optionalString(obj, prefix, "action"); err != nil {
		return rule, err
	} else if present {
		switch act {
		case "add":
			rule.action = actionAdd
		case "set":
			rule.action = actionSet
		default:
			return rule, fail(prefix, `action: must be "add" or "set", got `, quote(act))
		}
	}
	return rule, nil
}

func requiredString(obj []keyValue, prefix, key string) (string, error) {
	s, present, err := optionalString(obj, prefix, key)
	if err != nil {
		return "", err
	}
	if !present {
		return "", fail(prefix, key, ": missing (required)")
	}
	return s, nil
}

func optionalString(obj []keyValue, prefix, key string) (string, bool, error) {
	raw, present := lookup(obj, key)
	if !present {
		return "", false, nil
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", true, fail(prefix, key, ": must be a string")
	}
	return unquote(raw), true, nil
}

func lookup(obj []keyValue, key string) ([]byte, bool) {
	found := false
	var last []byte
	for _, kv := range obj {
		if kv.key == key {
			// Like most JSON decoders, a repeated key takes its last value.
			found, last = true, kv.value
		}
	}
	return last, found
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// isToken reports whether s is an RFC 9110 token (section 5.6.2).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// quote renders a user-supplied string for an error message: in double quotes,
// with control bytes, DEL, quote and backslash written as \xNN so the log line
// stays one line. Implementations in other languages render it identically.
func quote(s string) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == '"' || c == '\\' {
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		} else {
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// isBlank is len(bytes.TrimSpace(data)) == 0 without the unicode tables'
// other properties: every rune is Unicode white space.
func isBlank(data []byte) bool {
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		if !isSpace(r) || (r == utf8.RuneError && size <= 1) {
			return false
		}
		data = data[size:]
	}
	return true
}

// isSpace is unicode.IsSpace (the White_Space property).
func isSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200A
}
