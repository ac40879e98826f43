package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// The configuration contract is documented in CONTRACT.md and pinned by
// testdata/contract.json, which every implementation of add-header (this one,
// the Zig one, and the Python host tests) must pass byte for byte.

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

func errorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

var ruleKeys = []string{"header", "value", "path", "action"}

// parseConfig validates and compiles the plugin configuration. It never
// panics; every failure is a *configError naming the field at fault.
func parseConfig(data []byte) (*pluginConfig, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errorf(`configuration is empty; want {"header": NAME, "value": VALUE} or {"headers": [...]}`)
	}
	if !json.Valid(data) {
		return nil, errorf("not valid JSON")
	}
	top, ok := decodeObject(data)
	if !ok {
		return nil, errorf("top level must be a JSON object")
	}
	cfg := &pluginConfig{}
	if rawList, isList := lookup(top, "headers"); isList {
		for _, kv := range top {
			if kv.key != "headers" {
				if contains(ruleKeys, kv.key) {
					return nil, errorf(`use either "headers" or the single-header form, not both (found %s)`, quote(kv.key))
				}
				return nil, errorf("unknown key %s (allowed: header, value, path, action, headers)", quote(kv.key))
			}
		}
		var items []json.RawMessage
		if err := json.Unmarshal(rawList, &items); err != nil || len(items) == 0 {
			return nil, errorf(`headers: must be a non-empty array of objects`)
		}
		for i, item := range items {
			obj, ok := decodeObject(item)
			if !ok {
				return nil, errorf("headers[%d]: must be an object", i)
			}
			rule, err := parseRule(obj, fmt.Sprintf("headers[%d].", i), "header, value, path, action")
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
			return rule, errorf("%sunknown key %s (allowed: %s)", where, quote(kv.key), allowed)
		}
	}

	name, err := requiredString(obj, prefix, "header")
	if err != nil {
		return rule, err
	}
	if name == "" {
		return rule, errorf("%sheader: must not be empty", prefix)
	}
	if name[0] == ':' {
		return rule, errorf("%sheader: %s is a pseudo-header, which cannot be added", prefix, quote(name))
	}
	if !isToken(name) {
		return rule, errorf("%sheader: %s is not a valid header name (RFC 9110 token characters only)", prefix, quote(name))
	}
	rule.name = name

	value, err := requiredString(obj, prefix, "value")
	if err != nil {
		return rule, err
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return rule, errorf("%svalue: must not contain CR, LF or NUL", prefix)
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
			return rule, errorf(`%spath: must be "request" or "response", got %s`, prefix, quote(path))
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
			return rule, errorf(`%saction: must be "add" or "set", got %s`, prefix, quote(act))
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
		return "", errorf("%s%s: missing (required)", prefix, key)
	}
	return s, nil
}

func optionalString(obj []keyValue, prefix, key string) (string, bool, error) {
	raw, present := lookup(obj, key)
	if !present {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || raw[0] != '"' {
		return "", true, errorf("%s%s: must be a string", prefix, key)
	}
	return s, true, nil
}

type keyValue struct {
	key   string
	value json.RawMessage
}

// decodeObject returns the members of a JSON object in document order (so the
// first unknown key reported is the first one the user wrote), or false when
// data is not an object.
func decodeObject(data []byte) ([]keyValue, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out []keyValue
	for dec.More() {
		keyTok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, _ := keyTok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		out = append(out, keyValue{key: key, value: raw})
	}
	return out, true
}

func lookup(obj []keyValue, key string) (json.RawMessage, bool) {
	found := false
	var last json.RawMessage
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
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == '"' || c == '\\' {
			fmt.Fprintf(&b, `\x%02x`, c)
		} else {
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
