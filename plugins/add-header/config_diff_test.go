package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The hand-written parser (config.go, json.go) must agree with the encoding/json
// one it replaced (config_reference_test.go) on every input: same rules, or
// the same message. `go test -fuzz=FuzzParseConfigMatchesReference -fuzztime=60s`
// runs it at length; plain `go test` runs the seeds below.

func sameOutcome(t *testing.T, input []byte) {
	t.Helper()
	got, gotErr := parseConfig(input)
	want, wantErr := refParseConfig(input)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("input %q: error %v, reference %v", input, gotErr, wantErr)
	}
	if gotErr != nil {
		if gotErr.Error() != wantErr.Error() {
			t.Fatalf("input %q:\n got  %s\n want %s", input, gotErr, wantErr)
		}
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("input %q: rules %+v, reference %+v", input, got, want)
	}
}

var diffSeeds = []string{
	`{"header": "x\ud83d\ude00", "value": "v"}`,
	`{"header": "\ud83d", "value": "v"}`,
	`{"header": "\udc00\u0041", "value": "v"}`,
	`{"header": "\ud83d\u0041", "value": "v"}`,
	"{\"header\": \"\xff\xfe\", \"value\": \"v\"}",
	"{\"header\": \"\xed\xa0\x80\", \"value\": \"v\"}",
	"{\"hea\\u0064er\": \"x-a\", \"value\": \"\\u00e9\\/\"}",
	"\u00a0\u2028 \v\f",
	"\xc2\x85",
	"\xff",
	"\v{}",
	`{"headers": null}`,
	`{"headers": [1]}`,
	`{"headers": [{"header": "x-a", "value": "v"}], "headers": []}`,
	`{"header": "x-a", "header": "x-b", "value": "v", "path": "request", "action": "set"}`,
	`{"a": [1, {"b": [true, false, null, -0.5e+10, "\""]}]}`,
	`{"header": "x-a", "value": "v"} x`,
	`{"header": "x-a", "value": "v",}`,
	`{"header" "x-a"}`,
	`[01]`,
	`"\u00zz"`,
	"{\"header\": \"a\x7fb\", \"value\": \"v\"}",
	`{"\u0000": 1}`,
	`{"headers": [{"header": "x-a", "value": "v", "headers": 1}]}`,
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	`{"x": ` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
}

func contractConfigs(t testing.TB) []string {
	data, err := os.ReadFile(filepath.Join("testdata", "contract.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c contract
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range c.Valid {
		out = append(out, v.Config)
	}
	for _, v := range c.Invalid {
		out = append(out, v.Config)
	}
	return out
}

func TestParseConfigMatchesReference(t *testing.T) {
	for _, input := range append(contractConfigs(t), diffSeeds...) {
		sameOutcome(t, []byte(input))
		// Every prefix too: truncations are the commonest bad input.
		for n := 0; n < len(input) && n < 200; n++ {
			sameOutcome(t, []byte(input[:n]))
		}
	}
}

func FuzzParseConfigMatchesReference(f *testing.F) {
	for _, input := range append(contractConfigs(f), diffSeeds...) {
		if len(input) < 1000 { // the 10000-deep seeds stall the mutator; TestParseConfigMatchesReference has them
			f.Add([]byte(input))
		}
	}
	f.Fuzz(func(t *testing.T, input []byte) { sameOutcome(t, input) })
}
