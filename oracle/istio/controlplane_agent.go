package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"istio.io/istio/pkg/wasm"
)

// What Envoy finally gets: the ECDS resources after the Istio agent's rewrite
// (pkg/wasm MaybeConvertWasmExtensionConfig, run on istiod's resources): remote code becomes
// the local file the agent's cache returned, the agent-only ISTIO_META_* variables are stripped,
// and a module the cache could not give becomes the agent's RBAC stand-in (allow-all for
// FAIL_OPEN, deny-all otherwise). The cache here is a table (--module URL=FILE): fetching is
// not this question's business (see the agent questions); every request to it is reported.

// moduleFlags collects repeated --module URL=FILE flags.
type moduleFlags map[string]string

func (m moduleFlags) String() string { return fmt.Sprint(map[string]string(m)) }

func (m moduleFlags) Set(s string) error {
	// The last "=" separates: URLs have them (base64 padding), module files do not.
	i := strings.LastIndex(s, "=")
	if i <= 0 || i == len(s)-1 {
		return fmt.Errorf("%q is not URL=FILE", s)
	}
	m[s[:i]] = s[i+1:]
	return nil
}

// agentFetch is one request the agent made to its module cache.
type agentFetch struct {
	URL             string `json:"url"`
	ResourceName    string `json:"resource_name"`
	Checksum        string `json:"checksum"`
	PullPolicy      string `json:"pull_policy"`
	ResourceVersion string `json:"resource_version"`
	PullSecret      bool   `json:"pull_secret"`
	Found           bool   `json:"found"`
}

// tableCache is a wasm.Cache answering from the --module table.
type tableCache struct {
	modules moduleFlags
	mu      sync.Mutex
	fetches []agentFetch
}

var _ wasm.Cache = &tableCache{}

func (c *tableCache) Get(url string, opts wasm.GetOptions) (string, error) {
	file, found := c.modules[url]
	c.mu.Lock()
	c.fetches = append(c.fetches, agentFetch{
		URL: url, ResourceName: opts.ResourceName, Checksum: opts.Checksum, PullPolicy: pullPolicyName(opts.PullPolicy),
		ResourceVersion: opts.ResourceVersion, PullSecret: len(opts.PullSecret) > 0, Found: found,
	})
	c.mu.Unlock()
	if !found {
		return "", fmt.Errorf("no --module for %s", url)
	}
	return file, nil
}

func (c *tableCache) Cleanup() {}

// agentRewrite runs the agent's conversion over istiod's ECDS resources.
func agentRewrite(ecds []*corev3.TypedExtensionConfig, modules moduleFlags) ([]json.RawMessage, []agentFetch, error) {
	resources := make([]*anypb.Any, 0, len(ecds))
	for _, ec := range ecds {
		a, err := anypb.New(ec)
		if err != nil {
			return nil, nil, err
		}
		resources = append(resources, a)
	}
	cache := &tableCache{modules: modules}
	if err := wasm.MaybeConvertWasmExtensionConfig(resources, cache); err != nil {
		// The agent NACKs the whole ECDS response; Envoy keeps what it had.
		return nil, nil, fmt.Errorf("the agent rejects the ECDS response: %w", err)
	}
	out := make([]json.RawMessage, 0, len(resources))
	for _, a := range resources {
		ec := &corev3.TypedExtensionConfig{}
		if err := a.UnmarshalTo(ec); err != nil {
			return nil, nil, err
		}
		raw, err := marshalProto(ec)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, raw)
	}
	sort.Slice(cache.fetches, func(i, j int) bool { return cache.fetches[i].ResourceName < cache.fetches[j].ResourceName })
	return out, cache.fetches, nil
}

func pullPolicyName(p wasm.PullPolicy) string {
	for name, value := range wasm.PullPolicyValues {
		if value == p {
			return name
		}
	}
	return fmt.Sprintf("PullPolicy(%d)", p)
}
