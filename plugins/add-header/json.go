package main

import (
	"unicode/utf16"
	"unicode/utf8"
)

// The slice of JSON the contract needs, with encoding/json's semantics:
// validJSON is json.Valid (nesting deeper than 10000 refused), objectMembers is
// json.Decoder.Token over an object with json.RawMessage values, arrayItems is
// []json.RawMessage, and unquote decodes a string literal the way Unmarshal
// does (invalid UTF-8 and unpaired surrogates become U+FFFD). Only validJSON
// reads untrusted bytes; the others run on input it accepted.

const maxNestingDepth = 10000

type keyValue struct {
	key   string
	value []byte
}

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(s []byte, i int) int {
	for i < len(s) && isWS(s[i]) {
		i++
	}
	return i
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// scanString returns the end (past the closing quote) of the string at s[i] == '"', or -1.
func scanString(s []byte, i int) int {
	for i++; i < len(s); {
		c := s[i]
		switch {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		case c == '\\':
			if i+1 >= len(s) {
				return -1
			}
			switch s[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(s) {
					return -1
				}
				for _, h := range s[i+2 : i+6] {
					if !isHex(h) {
						return -1
					}
				}
				i += 6
			default:
				return -1
			}
		default:
			i++
		}
	}
	return -1
}

func scanNumber(s []byte, i int) int {
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i >= len(s):
		return -1
	case s[i] == '0':
		i++
	case s[i] >= '1' && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	default:
		return -1
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !isDigit(s[i]) {
			return -1
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !isDigit(s[i]) {
			return -1
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	return i
}

func scanLiteral(s []byte, i int, lit string) int {
	if len(s)-i < len(lit) || string(s[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// memberValue scans `"key" :` at s[i] and returns where the value starts, or -1.
func memberValue(s []byte, i int) int {
	if i >= len(s) || s[i] != '"' {
		return -1
	}
	if i = scanString(s, i); i < 0 {
		return -1
	}
	if i = skipWS(s, i); i >= len(s) || s[i] != ':' {
		return -1
	}
	return skipWS(s, i+1)
}

// validJSON is json.Valid.
func validJSON(s []byte) bool {
	var open []bool // true = object
	i := skipWS(s, 0)
	for {
		// A value starts at s[i].
		if i >= len(s) {
			return false
		}
		switch c := s[i]; c {
		case '{', '[':
			if len(open) == maxNestingDepth {
				return false
			}
			isObject := c == '{'
			open = append(open, isObject)
			if i = skipWS(s, i+1); i >= len(s) {
				return false
			}
			if (isObject && s[i] == '}') || (!isObject && s[i] == ']') {
				open = open[:len(open)-1]
				i++
			} else {
				if isObject {
					if i = memberValue(s, i); i < 0 {
						return false
					}
				}
				continue
			}
		case '"':
			i = scanString(s, i)
		case 't':
			i = scanLiteral(s, i, "true")
		case 'f':
			i = scanLiteral(s, i, "false")
		case 'n':
			i = scanLiteral(s, i, "null")
		default:
			i = scanNumber(s, i)
		}
		if i < 0 {
			return false
		}
		// After a value: close containers, or move to the next element.
		for {
			i = skipWS(s, i)
			if len(open) == 0 {
				return i == len(s)
			}
			if i >= len(s) {
				return false
			}
			inObject := open[len(open)-1]
			if (inObject && s[i] == '}') || (!inObject && s[i] == ']') {
				open = open[:len(open)-1]
				i++
				continue
			}
			if s[i] != ',' {
				return false
			}
			i = skipWS(s, i+1)
			if inObject {
				if i = memberValue(s, i); i < 0 {
					return false
				}
			}
			break
		}
	}
}

// skipValue returns the end of the valid value at s[i].
func skipValue(s []byte, i int) int {
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '"':
		if end := scanString(s, i); end >= 0 {
			return end
		}
		return len(s)
	case '{', '[':
		depth := 0
		for i < len(s) {
			switch s[i] {
			case '"':
				end := scanString(s, i)
				if end < 0 {
					return len(s)
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		for i < len(s) && !isWS(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']' {
			i++
		}
		return i
	}
}

// objectMembers returns the members of the object raw (a valid JSON value) in
// document order, so the first unknown key reported is the first one the user
// wrote; false when raw is not an object.
func objectMembers(raw []byte) ([]keyValue, bool) {
	i := skipWS(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, false
	}
	var out []keyValue
	for i = skipWS(raw, i+1); i < len(raw) && raw[i] == '"'; {
		keyEnd := scanString(raw, i)
		if keyEnd < 0 {
			break
		}
		key := unquote(raw[i:keyEnd])
		if i = skipWS(raw, keyEnd); i >= len(raw) || raw[i] != ':' {
			break
		}
		i = skipWS(raw, i+1)
		end := skipValue(raw, i)
		out = append(out, keyValue{key: key, value: raw[i:end]})
		if i = skipWS(raw, end); i >= len(raw) || raw[i] != ',' {
			break
		}
		i = skipWS(raw, i+1)
	}
	return out, true
}

// arrayItems returns the raw items of the array raw (a valid JSON value), or false.
func arrayItems(raw []byte) ([][]byte, bool) {
	i := skipWS(raw, 0)
	if i >= len(raw) || raw[i] != '[' {
		return nil, false
	}
	var out [][]byte
	for i = skipWS(raw, i+1); i < len(raw) && raw[i] != ']'; {
		end := skipValue(raw, i)
		if end == i {
			break
		}
		out = append(out, raw[i:end])
		if i = skipWS(raw, end); i >= len(raw) || raw[i] != ',' {
			break
		}
		i = skipWS(raw, i+1)
	}
	return out, true
}

// escapedRune reads \uXXXX at s[i:], or returns -1.
func escapedRune(s []byte, i int) rune {
	if i+6 > len(s) || s[i] != '\\' || s[i+1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[i+2 : i+6] {
		switch {
		case c >= '0' && c <= '9':
			r = r*16 + rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r*16 + rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r*16 + rune(c-'A'+10)
		default:
			return -1
		}
	}
	return r
}

// unquote decodes the (valid) string literal raw, quotes included.
func unquote(raw []byte) string {
	if len(raw) < 2 {
		return ""
	}
	s := raw[1 : len(raw)-1]
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			switch e := s[i+1]; e {
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r := escapedRune(s, i)
				if r < 0 {
					return string(out)
				}
				i += 6
				if utf16.IsSurrogate(r) {
					if dec := utf16.DecodeRune(r, escapedRune(s, i)); dec != utf8.RuneError {
						i += 6
						out = utf8.AppendRune(out, dec)
						continue
					}
					r = utf8.RuneError
				}
				out = utf8.AppendRune(out, r)
				continue
			default: // '"', '\\', '/'
				out = append(out, e)
			}
			i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			out = utf8.AppendRune(out, r)
			i += size
		}
	}
	return string(out)
}
