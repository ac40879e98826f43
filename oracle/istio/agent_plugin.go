package main

// op "plugin": a WasmPlugin from istiod to Envoy, all Istio code: the WasmPlugin (YAML) and the
// cluster's Secrets go through istiod's ECDS generator (pilot/pkg/xds/ecds.go EcdsGenerator.Generate:
// the WasmPlugin->TrafficExtension translation, URL defaulting, pull policy / resource version /
// pull secret env, the Secret lookup) for a gateway proxy in the given namespace with the given
// labels, and each ECDS resource then through the agent's conversion (pkg/wasm
// MaybeConvertWasmExtensionConfig) with the session's cache. The answer is both: what istiod sends
// and what the agent hands Envoy.

import (
	"encoding/json"
	"fmt"
	"os"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/config/kube/extensions"
	credscontroller "istio.io/istio/pilot/pkg/credentials"
	credkube "istio.io/istio/pilot/pkg/credentials/kube"
	"istio.io/istio/pilot/pkg/model"
	pilotcore "istio.io/istio/pilot/pkg/networking/core"
	"istio.io/istio/pilot/pkg/xds"
	"istio.io/istio/pkg/cluster"
	"istio.io/istio/pkg/config/schema/kind"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/krt"
	"istio.io/istio/pkg/spiffe"
	"istio.io/istio/pkg/test"
	"istio.io/istio/pkg/util/sets"
	"istio.io/istio/pkg/wasm"
)

type agentPluginRequest struct {
	Config    string            `json:"config"`    // WasmPlugin YAML (several documents allowed)
	Secrets   []json.RawMessage `json:"secrets"`   // Kubernetes Secret objects (JSON)
	Namespace string            `json:"namespace"` // the gateway proxy's namespace
	Labels    map[string]string `json:"labels"`    // the gateway proxy's labels
}

type agentPluginAnswer struct {
	// What istiod sends the gateway's agent (ECDS), by resource name, and what the agent hands
	// Envoy after conversion (the module as a local file, or the RBAC fallback).
	Ecds      map[string]json.RawMessage `json:"ecds"`
	Converted map[string]json.RawMessage `json:"converted"`
	Error     string                     `json:"error,omitempty"` // the agent's logged conversion error
	// Set when istiod's validation (the admission webhook's) refuses the configuration.
	Rejected string `json:"rejected,omitempty"`
}

func agentPlugin(cache *wasm.LocalFileCache, raw []byte) (answer *agentPluginAnswer, err error) {
	var req agentPluginRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, err
	}
	failer := &agentFailer{}
	defer failer.cleanup()
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(agentFatal); ok {
				answer, err = nil, fmt.Errorf("istio harness: %s", string(f))
				return
			}
			panic(r)
		}
	}()

	objects := make([]runtime.Object, 0, len(req.Secrets))
	for i, rawSecret := range req.Secrets {
		secret := &corev1.Secret{}
		if err := json.Unmarshal(rawSecret, secret); err != nil {
			return nil, fmt.Errorf("secrets[%d] is not a Secret: %v", i, err)
		}
		objects = append(objects, secret)
	}
	client := kube.NewFakeClient(objects...)
	creds := credkube.NewCredentialsController(client, nil, true)
	client.RunAndWait(test.NewStop(failer))

	// Parsed and validated as istiod's admission webhook would (crd.ParseInputs validates each kind).
	configs, _, err := crd.ParseInputs(req.Config)
	if err != nil {
		return &agentPluginAnswer{Rejected: err.Error()}, nil
	}
	cg := pilotcore.NewConfigGenTest(failer, pilotcore.TestOptions{
		Configs: configs,
		// istiod serves WasmPlugins as synthetic TrafficExtensions (pilot/pkg/bootstrap/configcontroller.go).
		CreateConfigStore: func(c model.ConfigStoreController) model.ConfigStoreController {
			return extensions.NewController(c, nil, krt.GlobalDebugHandler)
		},
	})
	namespace := req.Namespace
	if namespace == "" {
		namespace = "default"
	}
	proxy := cg.SetupProxy(&model.Proxy{
		Type:            model.Router,
		ConfigNamespace: namespace,
		Labels:          req.Labels,
		Metadata:        &model.NodeMetadata{Namespace: namespace, Labels: req.Labels},
		// GeneratePullSecrets only reads Secrets for proxies whose identity istiod verified.
		VerifiedIdentity: &spiffe.Identity{TrustDomain: "cluster.local", Namespace: namespace, ServiceAccount: "gateway"},
	})
	push := cg.PushContext()
	names := sets.New[string]()
	for _, wrappers := range push.TrafficExtensions(proxy) {
		for _, w := range wrappers {
			names.Insert(w.ResourceName)
		}
	}
	generator := &xds.EcdsGenerator{ConfigGenerator: cg.ConfigGen}
	generator.SetCredController(agentCredentials{creds})
	resources, _, err := generator.Generate(proxy, &model.WatchedResource{ResourceNames: names},
		&model.PushRequest{Forced: true, Push: push})
	if err != nil {
		return nil, err
	}
	answer = &agentPluginAnswer{Ecds: map[string]json.RawMessage{}, Converted: map[string]json.RawMessage{}}
	anys := make([]*anypb.Any, 0, len(resources))
	for _, r := range resources {
		js, err := agentExtensionJSON(r.Resource)
		if err != nil {
			return nil, err
		}
		answer.Ecds[r.Name] = js
		anys = append(anys, r.Resource)
	}
	if err := wasm.MaybeConvertWasmExtensionConfig(anys, cache); err != nil {
		answer.Error = err.Error()
	}
	for i, r := range resources {
		js, err := agentExtensionJSON(anys[i])
		if err != nil {
			return nil, err
		}
		answer.Converted[r.Name] = js
	}
	return answer, nil
}

func agentExtensionJSON(resource *anypb.Any) (json.RawMessage, error) {
	ec := &core.TypedExtensionConfig{}
	if err := resource.UnmarshalTo(ec); err != nil {
		return nil, err
	}
	return protojson.Marshal(ec)
}

// agentCredentials serves the one cluster's Secrets to the ECDS generator.
type agentCredentials struct {
	controller *credkube.CredentialsController
}

func (a agentCredentials) ForCluster(cluster.ID) (credscontroller.Controller, error) {
	return a.controller, nil
}

func (a agentCredentials) AddSecretHandler(func(k kind.Kind, name, namespace string)) {}

// agentFailer lets Istio's config-generation test harness run outside `go test`.
type agentFailer struct{ cleanups []func() }

type agentFatal string

func (f *agentFailer) Fail()             { panic(agentFatal("failed")) }
func (f *agentFailer) FailNow()          { panic(agentFatal("failed")) }
func (f *agentFailer) Fatal(args ...any) { panic(agentFatal(fmt.Sprint(args...))) }
func (f *agentFailer) Fatalf(format string, args ...any) {
	panic(agentFatal(fmt.Sprintf(format, args...)))
}
func (f *agentFailer) Log(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }
func (f *agentFailer) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (f *agentFailer) Helper()                         {}
func (f *agentFailer) Skip(args ...any)                { panic(agentFatal("skip: " + fmt.Sprint(args...))) }
func (f *agentFailer) Cleanup(fn func())               { f.cleanups = append(f.cleanups, fn) }
func (f *agentFailer) TempDir() string {
	dir, err := os.MkdirTemp("", "istio-oracle-agent-")
	if err != nil {
		panic(agentFatal(err.Error()))
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (f *agentFailer) cleanup() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}
