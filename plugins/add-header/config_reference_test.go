package main

// The first implementation of the contract, on encoding/json, kept as the
// oracle the hand-written parser in config.go is fuzzed against
// (FuzzParseConfigMatchesReference). Test-only: it is not in the module.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

func refErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

var refRuleKeys = []string{"header", "value", "path", "action"}

// refParseConfig validates and compiles the plugin configuration. It never
// panics; every failure is a *configError naming the field at fault.
func refParseConfig(data []byte) (*pluginConfig, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, refErrorf(`configuration is empty; want {"header": NAME, "value": VALUE} or {"headers": [...]}`)
	}
	if !json.Valid(data) {
		return nil, refErrorf("not valid JSON")
	}
	top, ok := refDecodeObject(data)
	if !ok {
		return nil, refErrorf("top level must be a JSON object")
	}
	cfg := &pluginConfig{}
	if rawList, isList := refLookup(top, "headers"); isList {
		for _, kv := range top {
			if kv.key != "headers" {
				if refContains(refRuleKeys, kv.key) {
					return nil, refErrorf(`use either "headers" or the single-header form, not both (found %s)`, refQuote(kv.key))
				}
				return nil, refErrorf("unknown key %s (allowed: header, value, path, action, headers)", refQuote(kv.key))
			}
		}
		var items []json.RawMessage
		if err := json.Unmarshal(rawList, &items); err != nil || len(items) == 0 {
			return nil, refErrorf(`headers: must be a non-empty array of objects`)
		}
		for i, item := range items {
			obj, ok := refDecodeObject(item)
			if !ok {
				return nil, refErrorf("headers[%d]: must be an object", i)
			}
			rule, err := refParseRule(obj, fmt.Sprintf("headers[%d].", i), "header, value, path, action")
			if err != nil {
				return nil, err
			}
			cfg.add(rule)
		}
		return cfg, nil
	}
	rule, err := refParseRule(top, "", "header, value, path, action, headers")
	if err != nil {
		return nil, err
	}
	cfg.add(rule)
	return cfg, nil
}

func refParseRule(obj []refKeyValue, prefix, allowed string) (headerRule, error) {
	rule := headerRule{path: toResponse, action: actionAdd}
	for _, kv := range obj {
		if !refContains(refRuleKeys, kv.key) {
			where := strings.TrimSuffix(prefix, ".")
			if where != "" {
				where += ": "
			}
			return rule, refErrorf("%sunknown key %s (allowed: %s)", where, refQuote(kv.key), allowed)
		}
	}

	name, err := refRequiredString(obj, prefix, "header")
	if err != nil {
		return rule, err
	}
	if name == "" {
		return rule, refErrorf("%sheader: must not be empty", prefix)
	}
	if name[0] == ':' {
		return rule, refErrorf("%sheader: %s is a pseudo-header, which cannot be added", prefix, refQuote(name))
	}
	if !refIsToken(name) {
		return rule, refErrorf("%sheader: %s is not a valid header name (RFC 9110 token characters only)", prefix, refQuote(name))
	}
	rule.name = name

	value, err := refRequiredString(obj, prefix, "value")
	if err != nil {
		return rule, err
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return rule, refErrorf("%svalue: must not contain CR, LF or NUL", prefix)
	}
	rule.value = value

	if path, present, err := refOptionalString(obj, prefix, "path"); err != nil {
		return rule, err
	} else if present {
		switch path {
		case "request":
			rule.path = toRequest
		case "response":
			rule.path = toResponse
		default:
			return rule, refErrorf(`%spath: must be "request" or "response", got %s`, prefix, refQuote(path))
		}
	}

	if act, present, err := refOptionalString(obj, prefix, "action"); err != nil {
		return rule, err
	} else if present {
		switch act {
		case "add":
			rule.action = actionAdd
		case "set":
			rule.action = actionSet
		default:
			return rule, refErrorf(`%saction: must be "add" or "set", got %s`, prefix, refQuote(act))
		}
	}
	return rule, nil
}

func refRequiredString(obj []refKeyValue, prefix, key string) (string, error) {
	s, present, err := refOptionalString(obj, prefix, key)
	if err != nil {
		return "", err
	}
	if !present {
		return "", refErrorf("%s%s: missing (required)", prefix, key)
	}
	return s, nil
}

func refOptionalString(obj []refKeyValue, prefix, key string) (string, bool, error) {
	raw, present := refLookup(obj, key)
	if !present {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || raw[0] != '"' {
		return "", true, refErrorf("%s%s: must be a string", prefix, key)
	}
	return s, true, nil
}

type refKeyValue struct {
	key   string
	value json.RawMessage
}

// refDecodeObject returns the members of a JSON object in document order (so the
// first unknown key reported is the first one the user wrote), or false when
// data is not an object.
func refDecodeObject(data []byte) ([]refKeyValue, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out []refKeyValue
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
		out = append(out, refKeyValue{key: key, value: raw})
	}
	return out, true
}

func refLookup(obj []refKeyValue, key string) (json.RawMessage, bool) {
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

func refContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// refIsToken reports whether s is an RFC 9110 token (section 5.6.2).
func refIsToken(s string) bool {
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

// refQuote renders a user-supplied string for an error message: in double quotes,
// with control bytes, DEL, refQuote and backslash written as \xNN so the log line
// stays one line. Implementations in other languages render it identically.
func refQuote(s string) string {
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
