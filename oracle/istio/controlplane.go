package main

// The control-plane question: what istiod sends one gateway proxy.
//
// Istio YAML on stdin (WasmPlugin, Gateway, VirtualService, ServiceEntry, ... and the Kubernetes
// Services and Secrets they rely on); flags describe the gateway proxy. The answer is built by
// Istio's own config generation: the pilot test harness core.NewConfigGenTest (an in-memory config
// store and service registry, no Kubernetes), the WasmPlugin -> TrafficExtension translation
// controller istiod registers in bootstrap, ConfigGen.BuildListeners and BuildHTTPRoutes (LDS and
// RDS), and the ECDS generator (pilot/pkg/xds EcdsGenerator, with the pull-secret lookup).

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"istio.io/istio/pilot/pkg/config/kube/extensions"
	"istio.io/istio/pilot/pkg/config/kube/gateway"
	kubesecrets "istio.io/istio/pilot/pkg/credentials/kube"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
	kubecontroller "istio.io/istio/pilot/pkg/serviceregistry/kube/controller"
	"istio.io/istio/pilot/pkg/xds"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/krt"
	istiolog "istio.io/istio/pkg/log"
	"istio.io/istio/pkg/spiffe"
	"istio.io/istio/pkg/util/sets"
	"istio.io/istio/pkg/wellknown"
)

func init() {
	register("controlplane", "what istiod sends a gateway proxy (LDS, RDS, ECDS) for Istio YAML on stdin", runControlPlane)
}

type controlPlaneFlags struct {
	namespace      string
	labels         string
	rootNamespace  string
	istioVersion   string
	ip             string
	serviceAccount string
	clusterID      string
	trustDomain    string
	modules        moduleFlags
}

func runControlPlane(args []string) error {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	f := controlPlaneFlags{modules: moduleFlags{}}
	fs.StringVar(&f.namespace, "namespace", "", "the gateway proxy's namespace (required)")
	fs.StringVar(&f.labels, "labels", "", "the gateway pod's labels: KEY=VALUE[,KEY=VALUE] (required)")
	fs.StringVar(&f.rootNamespace, "root-namespace", "istio-system", "the mesh's root namespace (meshConfig.rootNamespace)")
	fs.StringVar(&f.istioVersion, "istio-version", "1.31.0", "the proxy's Istio version (node metadata ISTIO_VERSION)")
	fs.StringVar(&f.ip, "ip", "10.1.0.1", "the gateway pod's IP (Services selecting its labels get it as an endpoint)")
	fs.StringVar(&f.serviceAccount, "service-account", "default", "the gateway's service account (its verified identity)")
	fs.StringVar(&f.clusterID, "cluster-id", "Kubernetes", "the proxy's cluster")
	fs.StringVar(&f.trustDomain, "trust-domain", "cluster.local", "the mesh's trust domain")
	fs.Var(f.modules, "module", "URL=FILE (the last = separates): the agent's cache gives FILE for URL (repeatable); other URLs fail to fetch")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q (the YAML comes on stdin)", fs.Args())
	}
	if f.namespace == "" {
		return fmt.Errorf("--namespace is required")
	}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return err
	}
	if len(labels) == 0 {
		return fmt.Errorf("--labels is required (the gateway pod's labels, KEY=VALUE[,KEY=VALUE])")
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	quietIstioLogs()
	answer, err := answerControlPlane(f, labels, input)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	return enc.Encode(answer)
}

// quietIstioLogs sends Istio's own logging (stdout by default) to stderr, warnings and up, so
// stdout holds only the answer.
func quietIstioLogs() {
	opts := istiolog.DefaultOptions()
	opts.OutputPaths = []string{"stderr"}
	opts.SetDefaultOutputLevel(istiolog.DefaultScopeName, istiolog.WarnLevel)
	for _, scope := range istiolog.Scopes() {
		opts.SetDefaultOutputLevel(scope.Name(), istiolog.WarnLevel)
	}
	_ = istiolog.Configure(opts)
}

type controlPlaneAnswer struct {
	Istio     string            `json:"istio"`
	Proxy     proxyAnswer       `json:"proxy"`
	Listeners []listenerAnswer  `json:"listeners"`
	Routes    []json.RawMessage `json:"routes"`
	// ECDS resources (TypedExtensionConfig) for every ECDS filter the listeners name, as istiod
	// sends them: before the agent's remote-to-local rewrite.
	ECDS []json.RawMessage `json:"ecds"`
	// The same after the Istio agent's rewrite (controlplane_agent.go): what Envoy gets.
	EnvoyECDS []json.RawMessage `json:"envoy_ecds"`
	// The module requests the agent made while rewriting (--module answers them).
	AgentFetches []agentFetch `json:"agent_fetches"`
	// Resources the input held that Istio's parser did not take (kind, namespace/name).
	Ignored []string `json:"ignored"`
}

type proxyAnswer struct {
	Namespace         string            `json:"namespace"`
	Labels            map[string]string `json:"labels"`
	RootNamespace     string            `json:"root_namespace"`
	IstioVersion      string            `json:"istio_version"`
	ServiceTargets    []string          `json:"service_targets"` // host:port->targetPort
	MergedServerPorts []uint32          `json:"merged_server_ports"`
}

type listenerAnswer struct {
	Name         string              `json:"name"`
	Address      string              `json:"address"`
	Port         uint32              `json:"port"`
	FilterChains []filterChainAnswer `json:"filter_chains"`
}

type filterChainAnswer struct {
	// The network filters, in order (the HCM last on an HTTP chain): name plus either
	// config_discovery (ECDS) or typed_config's type.
	NetworkFilters []filterAnswer `json:"network_filters"`
	// The HTTP filters, in order, likewise.
	HTTPFilters []filterAnswer `json:"http_filters"`
	// The whole HttpConnectionManager as protojson (proto field names), http_filters included.
	HCM json.RawMessage `json:"hcm,omitempty"`
}

type filterAnswer struct {
	Name            string          `json:"name"`
	TypedConfigType string          `json:"typed_config_type,omitempty"`
	ConfigDiscovery json.RawMessage `json:"config_discovery,omitempty"`
	Disabled        bool            `json:"disabled,omitempty"`
}

var protoJSON = protojson.MarshalOptions{UseProtoNames: true}

func marshalProto(m proto.Message) (json.RawMessage, error) {
	b, err := protoJSON.Marshal(m)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

func answerControlPlane(f controlPlaneFlags, labels map[string]string, input []byte) (*controlPlaneAnswer, error) {
	parsed, err := parseControlPlaneInput(input, f)
	if err != nil {
		return nil, err
	}
	instances, err := parsed.instancesFor(f.ip, f.namespace, labels)
	if err != nil {
		return nil, err
	}
	failer := newOracleFailer()
	defer failer.cleanup()

	meshConfig := mesh.DefaultMeshConfig()
	meshConfig.RootNamespace = f.rootNamespace
	meshConfig.TrustDomain = f.trustDomain

	var answer *controlPlaneAnswer
	var creds *kubesecrets.Multicluster
	err = failer.run(func() {
		cg := core.NewConfigGenTest(failer, core.TestOptions{
			Configs:    parsed.configs,
			MeshConfig: meshConfig,
			Services:   parsed.services,
			Instances:  instances,
			ClusterID:  clusterID(f.clusterID),
			// What istiod's bootstrap adds to its config stores: the controller that turns each
			// WasmPlugin into a synthetic TrafficExtension (pilot/pkg/config/kube/extensions).
			CreateConfigStore: func(c model.ConfigStoreController) model.ConfigStoreController {
				return extensions.NewController(c, nil, krt.GlobalDebugHandler)
			},
			// Started below, once the Kubernetes side is in place (as pilot/test/xds does).
			SkipRun: true,
		})
		env := cg.Env()
		updater := model.NewEndpointIndexUpdater(env.EndpointIndex)
		stop := make(chan struct{})
		failer.Cleanup(func() { close(stop) })
		// A fake Kubernetes API holding the input's Secrets, read by istiod's credentials controller
		// (Wasm pull secrets) and its Gateway API controller (which a gateway proxy labelled
		// gateway.networking.k8s.io/gateway-name consults; it holds no Gateway API objects here).
		client := kube.NewFakeClient(parsed.secrets...)
		creds = newCredentials(client, f.clusterID, stop)
		gwc := gateway.NewController(client, func(schema.GroupVersionResource, <-chan struct{}) bool { return true },
			kubecontroller.Options{DomainSuffix: "cluster.local", ClusterID: clusterID(f.clusterID), SystemNamespace: f.rootNamespace},
			updater)
		env.GatewayAPIController = gwc
		client.RunAndWait(stop)
		go gwc.Run(stop)
		cg.Run()
		if !waitSynced(gwc.HasSynced, 30*time.Second) {
			failer.Fatalf("the Gateway API controller did not sync in 30 s")
		}
		if err := env.InitNetworksManager(updater); err != nil {
			failer.Fatal(err)
		}
		env.PushContext().InitContext(env, nil, nil)
		proxy := cg.SetupProxy(&model.Proxy{
			Type:            model.Router,
			ID:              "gateway-oracle." + f.namespace,
			ConfigNamespace: f.namespace,
			Labels:          labels,
			IPAddresses:     []string{f.ip},
			DNSDomain:       f.namespace + ".svc.cluster.local",
			Metadata: &model.NodeMetadata{
				Namespace:    f.namespace,
				Labels:       labels,
				IstioVersion: f.istioVersion,
				ClusterID:    clusterID(f.clusterID),
			},
			VerifiedIdentity: &spiffe.Identity{
				TrustDomain: f.trustDomain, Namespace: f.namespace, ServiceAccount: f.serviceAccount,
			},
		})
		push := cg.PushContext()

		a := &controlPlaneAnswer{
			Istio: linkedIstioVersion(),
			Proxy: proxyAnswer{
				Namespace:     f.namespace,
				Labels:        labels,
				RootNamespace: f.rootNamespace,
				IstioVersion:  f.istioVersion,
			},
			Listeners:    []listenerAnswer{},
			Routes:       []json.RawMessage{},
			ECDS:         []json.RawMessage{},
			EnvoyECDS:    []json.RawMessage{},
			AgentFetches: []agentFetch{},
			Ignored:      parsed.ignored,
		}
		for _, target := range proxy.ServiceTargets {
			a.Proxy.ServiceTargets = append(a.Proxy.ServiceTargets,
				fmt.Sprintf("%s:%d->%d", target.Service.Hostname, target.Port.Port, target.Port.TargetPort))
		}
		if proxy.MergedGateway != nil {
			for _, port := range proxy.MergedGateway.ServerPorts {
				a.Proxy.MergedServerPorts = append(a.Proxy.MergedServerPorts, port.Number)
			}
		}

		listeners := cg.ConfigGen.BuildListeners(proxy, push)
		ecdsNames := sets.New[string]()
		for _, l := range listeners {
			la, names, err := describeListener(l)
			if err != nil {
				failer.Fatalf("listener %s: %v", l.Name, err)
			}
			ecdsNames.Merge(names)
			a.Listeners = append(a.Listeners, la)
		}
		sort.Slice(a.Listeners, func(i, j int) bool { return a.Listeners[i].Name < a.Listeners[j].Name })

		routeNames := core.ExtractRoutesFromListeners(listeners)
		routes, _ := cg.ConfigGen.BuildHTTPRoutes(proxy, &model.PushRequest{Push: push, Forced: true}, routeNames)
		for _, r := range routes {
			rc := &routeConfiguration{}
			if err := r.Resource.UnmarshalTo(rc); err != nil {
				failer.Fatalf("route %s: %v", r.Name, err)
			}
			raw, err := marshalProto(rc)
			if err != nil {
				failer.Fatalf("route %s: %v", r.Name, err)
			}
			a.Routes = append(a.Routes, raw)
		}

		if ecdsNames.Len() > 0 {
			ecds, err := generateECDS(cg, proxy, push, ecdsNames, creds)
			if err != nil {
				failer.Fatalf("ECDS: %v", err)
			}
			for _, ec := range ecds {
				raw, err := marshalProto(ec)
				if err != nil {
					failer.Fatalf("ECDS %s: %v", ec.Name, err)
				}
				a.ECDS = append(a.ECDS, raw)
			}
			a.EnvoyECDS, a.AgentFetches, err = agentRewrite(ecds, f.modules)
			if err != nil {
				failer.Fatalf("%v", err)
			}
		}
		answer = a
	})
	if err != nil {
		return nil, err
	}
	return answer, nil
}

// generateECDS asks istiod's ECDS generator for the named extension configs, as a proxy watching
// them would get them (a forced full push), with Wasm pull secrets looked up by Istio's
// credentials controller in a fake Kubernetes holding the input's Secrets.
func generateECDS(
	cg *core.ConfigGenTest, proxy *model.Proxy, push *model.PushContext, names sets.String,
	creds *kubesecrets.Multicluster,
) ([]*typedExtensionConfig, error) {
	gen := &xds.EcdsGenerator{ConfigGenerator: cg.ConfigGen}
	gen.SetCredController(creds)
	watched := &model.WatchedResource{TypeUrl: v3.ExtensionConfigurationType, ResourceNames: names}
	resources, _, err := gen.Generate(proxy, watched, &model.PushRequest{Push: push, Forced: true})
	if err != nil {
		return nil, err
	}
	out := make([]*typedExtensionConfig, 0, len(resources))
	for _, r := range resources {
		ec := &typedExtensionConfig{}
		if err := r.Resource.UnmarshalTo(ec); err != nil {
			return nil, fmt.Errorf("%s: %w", r.Name, err)
		}
		out = append(out, ec)
	}
	return out, nil
}

// describeListener summarises one listener and returns the names of its ECDS filters.
func describeListener(l *listener.Listener) (listenerAnswer, sets.String, error) {
	la := listenerAnswer{Name: l.Name, FilterChains: []filterChainAnswer{}}
	if sa := l.GetAddress().GetSocketAddress(); sa != nil {
		la.Address = sa.GetAddress()
		la.Port = sa.GetPortValue()
	}
	names := sets.New[string]()
	for _, fc := range l.FilterChains {
		fca := filterChainAnswer{NetworkFilters: []filterAnswer{}, HTTPFilters: []filterAnswer{}}
		for _, nf := range fc.Filters {
			na := filterAnswer{Name: nf.Name}
			if cd := nf.GetConfigDiscovery(); cd != nil {
				raw, err := marshalProto(cd)
				if err != nil {
					return la, nil, err
				}
				na.ConfigDiscovery = raw
				names.Insert(nf.Name)
			} else if tc := nf.GetTypedConfig(); tc != nil {
				na.TypedConfigType = tc.TypeUrl
			}
			fca.NetworkFilters = append(fca.NetworkFilters, na)
			if nf.Name != wellknown.HTTPConnectionManager {
				continue
			}
			h := &hcm.HttpConnectionManager{}
			if err := nf.GetTypedConfig().UnmarshalTo(h); err != nil {
				return la, nil, err
			}
			for _, hf := range h.HttpFilters {
				ha := filterAnswer{Name: hf.Name, Disabled: hf.Disabled}
				if cd := hf.GetConfigDiscovery(); cd != nil {
					raw, err := marshalProto(cd)
					if err != nil {
						return la, nil, err
					}
					ha.ConfigDiscovery = raw
					names.Insert(hf.Name)
				} else if tc := hf.GetTypedConfig(); tc != nil {
					ha.TypedConfigType = tc.TypeUrl
				}
				fca.HTTPFilters = append(fca.HTTPFilters, ha)
			}
			raw, err := marshalProto(h)
			if err != nil {
				return la, nil, err
			}
			fca.HCM = raw
		}
		la.FilterChains = append(la.FilterChains, fca)
	}
	return la, names, nil
}
