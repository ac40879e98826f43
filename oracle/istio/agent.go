package main

// The agent side: what Istio's agent (istio-agent's Wasm cache, pkg/wasm) does with a module URL.
//
// `istio-oracle agent --cache-dir DIR` is a session: one wasm.LocalFileCache lives for the whole
// run (pull policies are about what the cache already holds), requests arrive as JSON lines on
// stdin and each gets one JSON line on stdout. Istio's own logs go to stderr.
//
// Requests ("op"):
//   - "get": wasm.LocalFileCache.Get(url, GetOptions{...}): the module file it returns (its sha256,
//     and the checksum and module directory the cache keys it by) or Istio's error;
//   - "convert": wasm.MaybeConvertWasmExtensionConfig on one ECDS TypedExtensionConfig (protojson):
//     the resource the agent hands Envoy (the module rewritten to a local file, or the RBAC
//     fallback filter) and the error it logs;
//   - "credential": istiod's lookup of an imagePullSecret (agent_secret.go);
//   - "plugin": WasmPlugin YAML and Secrets through istiod's ECDS generator, then the agent's
//     conversion (agent_plugin.go).

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/util/sets"
	"istio.io/istio/pkg/wasm"
)

func init() {
	register("agent", "Istio's agent (pkg/wasm): pulls through one LocalFileCache; JSON lines in, JSON lines out", runAgent)
}

type agentRequest struct {
	Op string `json:"op"`

	// op "get"
	URL             string  `json:"url"`
	Checksum        string  `json:"checksum"`
	ResourceName    string  `json:"resourceName"`
	ResourceVersion string  `json:"resourceVersion"`
	PullPolicy      string  `json:"pullPolicy"` // "", UNSPECIFIED_POLICY, IfNotPresent, Always
	PullSecret      *string `json:"pullSecret"` // docker config JSON as istiod sends it; null: none
	TimeoutSeconds  float64 `json:"timeoutSeconds"`

	// op "convert": a TypedExtensionConfig as protojson
	Resource json.RawMessage `json:"resource"`

	// op "credential"
	Secrets   []json.RawMessage `json:"secrets"` // Kubernetes Secret objects (JSON)
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`

	// op "plugin" (agent_plugin.go)
	Plugin json.RawMessage `json:"plugin"`
}

type agentAnswer struct {
	// get: the module file, or Error
	Path      string `json:"path,omitempty"`
	Checksum  string `json:"checksum,omitempty"`  // the file name's stem: the checksum the cache keys it by
	ModuleDir string `json:"moduleDir,omitempty"` // the directory: hex sha256 of the module name
	Sha256    string `json:"sha256,omitempty"`    // of the module bytes
	Size      int    `json:"size,omitempty"`
	// convert: the resource after conversion
	Resource json.RawMessage `json:"resource,omitempty"`
	// credential: the docker config istiod would put in the ECDS config
	Credential *string `json:"credential,omitempty"`
	// plugin
	Plugin *agentPluginAnswer `json:"plugin,omitempty"`
	Error  string             `json:"error,omitempty"`
	// The wasm scope's error lines logged while answering (with --log-file).
	Logged []string `json:"logged,omitempty"`
}

func runAgent(args []string) error {
	flags := flag.NewFlagSet("agent", flag.ContinueOnError)
	cacheDir := flags.String("cache-dir", "", "the agent's Wasm cache directory (required)")
	logFile := flags.String("log-file", "",
		"where Istio's logs go (default stderr); with a file, each answer lists the wasm errors logged meanwhile")
	insecure := flags.String("insecure-registries", "",
		"comma-separated hosts for wasm.Options.InsecureRegistries (pilot-agent's WASM_INSECURE_REGISTRIES; '*': all); plain-http loopback registries need none")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *cacheDir == "" {
		return errors.New("--cache-dir is required")
	}
	if err := agentLogsTo(*logFile); err != nil {
		return err
	}
	// istio-agent creates its cache directory at start; the cache only creates the per-module ones.
	if err := os.MkdirAll(*cacheDir, 0o755); err != nil {
		return err
	}
	var hosts []string
	for _, h := range strings.Split(*insecure, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	// What pilot-agent passes with its defaults (pilot/cmd/pilot-agent/options/agent.go, the WASM_*
	// environment variables): NewLocalFileCache hands HTTPRequestMaxRetries to the http fetcher
	// before sanitising, so leaving it 0 would mean no http attempt at all.
	cache := wasm.NewLocalFileCache(*cacheDir, wasm.Options{
		InsecureRegistries:    sets.New(hosts...),
		ModuleExpiry:          wasm.DefaultModuleExpiry,
		PurgeInterval:         wasm.DefaultPurgeInterval,
		HTTPRequestTimeout:    wasm.DefaultHTTPRequestTimeout,
		HTTPRequestMaxRetries: wasm.DefaultHTTPRequestMaxRetries,
	})
	defer cache.Cleanup()

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		var req agentRequest
		if err := json.Unmarshal([]byte(line), &req); err != nil {
			return fmt.Errorf("request is not JSON: %v", err)
		}
		offset := agentLogSize(*logFile)
		answer, err := agentAnswerFor(cache, &req)
		if err != nil {
			return fmt.Errorf("op %q: %v", req.Op, err)
		}
		answer.Logged = agentLogged(*logFile, offset)
		if err := out.Encode(answer); err != nil {
			return err
		}
	}
	return in.Err()
}

// agentLogsTo keeps stdout for answers: Istio's log scopes print to stdout by default.
func agentLogsTo(path string) error {
	if path == "" {
		path = "stderr"
	}
	options := log.DefaultOptions()
	options.OutputPaths = []string{path}
	options.ErrorOutputPaths = []string{"stderr"}
	return log.Configure(options)
}

// agentLogged returns the wasm scope's error lines written to the log file since offset: the agent's
// only report of why a conversion fell back to the RBAC filter.
func agentLogged(path string, offset int64) []string {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil || int64(len(data)) < offset {
		return nil
	}
	var lines []string
	for _, line := range strings.Split(string(data[offset:]), "\n") {
		fields := strings.SplitN(line, "\t", 4)
		if len(fields) == 4 && fields[1] == "error" && fields[2] == "wasm" {
			lines = append(lines, fields[3])
		}
	}
	return lines
}

func agentLogSize(path string) int64 {
	if info, err := os.Stat(path); err == nil {
		return info.Size()
	}
	return 0
}

func agentAnswerFor(cache *wasm.LocalFileCache, req *agentRequest) (*agentAnswer, error) {
	switch req.Op {
	case "get":
		return agentGet(cache, req)
	case "convert":
		return agentConvert(cache, req)
	case "credential":
		return agentCredential(req)
	case "plugin":
		answer, err := agentPlugin(cache, req.Plugin)
		if err != nil {
			return nil, err
		}
		return &agentAnswer{Plugin: answer}, nil
	default:
		return nil, fmt.Errorf("unknown op (get, convert, credential, plugin)")
	}
}

func agentGet(cache *wasm.LocalFileCache, req *agentRequest) (*agentAnswer, error) {
	policy := wasm.Unspecified
	if req.PullPolicy != "" {
		p, ok := wasm.PullPolicyValues[req.PullPolicy]
		if !ok {
			return nil, fmt.Errorf("unknown pullPolicy %q", req.PullPolicy)
		}
		policy = p
	}
	// istiod always sends 30 s (pilot/pkg/model/extensions.go buildDataSource).
	timeout := 30 * time.Second
	if req.TimeoutSeconds > 0 {
		timeout = time.Duration(req.TimeoutSeconds * float64(time.Second))
	}
	var secret []byte
	if req.PullSecret != nil {
		secret = []byte(*req.PullSecret)
	}
	path, err := cache.Get(req.URL, wasm.GetOptions{
		Checksum:        req.Checksum,
		ResourceName:    req.ResourceName,
		ResourceVersion: req.ResourceVersion,
		RequestTimeout:  timeout,
		PullSecret:      secret,
		PullPolicy:      policy,
	})
	if err != nil {
		return &agentAnswer{Error: err.Error()}, nil
	}
	return agentModuleFile(path)
}

func agentModuleFile(path string) (*agentAnswer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	return &agentAnswer{
		Path:      path,
		Checksum:  strings.TrimSuffix(filepath.Base(path), ".wasm"),
		ModuleDir: filepath.Base(filepath.Dir(path)),
		Sha256:    hex.EncodeToString(sum[:]),
		Size:      len(data),
	}, nil
}

func agentConvert(cache *wasm.LocalFileCache, req *agentRequest) (*agentAnswer, error) {
	ec := &core.TypedExtensionConfig{}
	if err := protojson.Unmarshal(req.Resource, ec); err != nil {
		return nil, fmt.Errorf("resource is not a TypedExtensionConfig: %v", err)
	}
	resource, err := anypb.New(ec)
	if err != nil {
		return nil, err
	}
	resources := []*anypb.Any{resource}
	answer := &agentAnswer{}
	if err := wasm.MaybeConvertWasmExtensionConfig(resources, cache); err != nil {
		answer.Error = err.Error()
	}
	converted := &core.TypedExtensionConfig{}
	if err := resources[0].UnmarshalTo(converted); err != nil {
		return nil, err
	}
	js, err := protojson.Marshal(converted)
	if err != nil {
		return nil, err
	}
	answer.Resource = js
	return answer, nil
}
