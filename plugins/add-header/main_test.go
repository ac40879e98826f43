package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

type headerSide struct {
	In     [][2]string         `json:"in"`
	Expect map[string][]string `json:"expect"`
}

type validCase struct {
	Name           string     `json:"name"`
	Config         string     `json:"config"`
	EnvoySemantics bool       `json:"envoy_semantics"`
	Request        headerSide `json:"request"`
	Response       headerSide `json:"response"`
}

type invalidCase struct {
	Name     string `json:"name"`
	Config   string `json:"config"`
	Critical string `json:"critical"`
}

type contract struct {
	Valid   []validCase   `json:"valid"`
	Invalid []invalidCase `json:"invalid"`
}

func loadContract(t *testing.T) contract {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "contract.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c contract
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Valid) == 0 || len(c.Invalid) == 0 {
		t.Fatal("contract.json holds no cases")
	}
	return c
}

// runners gives the VM contexts the contract runs against: the native Go
// build always, and the compiled module when ADD_HEADER_WASM names one (the
// Makefile sets it after `make build`).
func runners(t *testing.T) map[string]func() types.VMContext {
	t.Helper()
	out := map[string]func() types.VMContext{
		"go": func() types.VMContext { return &vmContext{} },
	}
	path := os.Getenv("ADD_HEADER_WASM")
	if path == "" {
		t.Log("ADD_HEADER_WASM not set: running the contract natively only")
		return out
	}
	wasm, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("ADD_HEADER_WASM=%s: %v", path, err)
	}
	// One module instance serves every case, as one Envoy VM serves many
	// plugin configurations; compiling it per case would take a minute.
	vm, err := proxytest.NewWasmVMContext(wasm)
	if err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	t.Cleanup(func() { _ = vm.Close() })
	out["wasm"] = func() types.VMContext { return vm }
	return out
}

func newHost(t *testing.T, vm types.VMContext, config string) (proxytest.HostEmulator, types.OnPluginStartStatus) {
	t.Helper()
	opt := proxytest.NewEmulatorOption().WithVMContext(vm).WithPluginConfiguration([]byte(config))
	host, reset := proxytest.NewHostEmulator(opt)
	t.Cleanup(reset)
	return host, host.StartPlugin()
}

func valuesOf(headers [][2]string, name string) []string {
	out := []string{}
	for _, h := range headers {
		if strings.EqualFold(h[0], name) {
			out = append(out, h[1])
		}
	}
	return out
}

func checkSide(t *testing.T, side string, got [][2]string, want map[string][]string) {
	t.Helper()
	for name, values := range want {
		have := valuesOf(got, name)
		if strings.Join(have, "\x00") != strings.Join(values, "\x00") || len(have) != len(values) {
			t.Errorf("%s header %q = %q, want %q (all: %v)", side, name, have, values, got)
		}
	}
}

func TestContractValid(t *testing.T) {
	c := loadContract(t)
	for runner, newVM := range runners(t) {
		for _, tc := range c.Valid {
			t.Run(runner+"/"+tc.Name, func(t *testing.T) {
				if tc.EnvoySemantics {
					t.Skip("proxytest concatenates values on add; covered by the Envoy tests")
				}
				host, status := newHost(t, newVM(), tc.Config)
				if status != types.OnPluginStartStatusOK {
					t.Fatalf("plugin refused to start: %v", host.GetCriticalLogs())
				}
				id := host.InitializeHttpContext()
				if a := host.CallOnRequestHeaders(id, tc.Request.In, false); a != types.ActionContinue {
					t.Fatalf("request action = %v", a)
				}
				if a := host.CallOnResponseHeaders(id, tc.Response.In, false); a != types.ActionContinue {
					t.Fatalf("response action = %v", a)
				}
				checkSide(t, "request", host.GetCurrentRequestHeaders(id), tc.Request.Expect)
				checkSide(t, "response", host.GetCurrentResponseHeaders(id), tc.Response.Expect)
				host.CompleteHttpContext(id)
				// Nothing at info level or above on the request path.
				for _, logs := range [][]string{host.GetInfoLogs(), host.GetWarnLogs(), host.GetErrorLogs(), host.GetCriticalLogs()} {
					if len(logs) != 0 {
						t.Errorf("unexpected logs at info or above: %q", logs)
					}
				}
			})
		}
	}
}

func TestContractInvalid(t *testing.T) {
	c := loadContract(t)
	for runner, newVM := range runners(t) {
		for _, tc := range c.Invalid {
			t.Run(runner+"/"+tc.Name, func(t *testing.T) {
				host, status := newHost(t, newVM(), tc.Config)
				if status != types.OnPluginStartStatusFailed {
					t.Fatalf("plugin started with a bad configuration")
				}
				logs := host.GetCriticalLogs()
				if len(logs) != 1 || logs[0] != tc.Critical {
					t.Fatalf("critical logs = %q, want exactly [%q]", logs, tc.Critical)
				}
			})
		}
	}
}

func TestIsToken(t *testing.T) {
	for _, ok := range []string{"x-a", "X_B", "a.b~c", "!#$%&'*+-.^_`|~09azAZ"} {
		if !isToken(ok) {
			t.Errorf("isToken(%q) = false", ok)
		}
	}
	for _, bad := range []string{"a b", "a:b", "a\"b", "a(b)", "é", "a\x7f", "a/b", "a@b", "{a}"} {
		if isToken(bad) {
			t.Errorf("isToken(%q) = true", bad)
		}
	}
}

// FuzzParseConfig checks the parser never panics and only ever fails with
// a single-line message.
func FuzzParseConfig(f *testing.F) {
	c := contract{}
	if data, err := os.ReadFile(filepath.Join("testdata", "contract.json")); err == nil {
		_ = json.Unmarshal(data, &c)
	}
	for _, v := range c.Valid {
		f.Add(v.Config)
	}
	for _, v := range c.Invalid {
		f.Add(v.Config)
	}
	f.Fuzz(func(t *testing.T, config string) {
		cfg, err := parseConfig([]byte(config))
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if len(cfg.request)+len(cfg.response) == 0 {
			t.Fatal("valid config with no rules")
		}
		for _, r := range append(cfg.request, cfg.response...) {
			if !isToken(r.name) || strings.ContainsAny(r.value, "\r\n\x00") {
				t.Fatalf("accepted bad rule %+v", r)
			}
		}
	})
}
