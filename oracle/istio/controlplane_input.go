package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	kuberuntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	kubereg "istio.io/istio/pilot/pkg/serviceregistry/kube"
	"istio.io/istio/pkg/cluster"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/labels"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/config/schema/resource"
)

// controlPlaneInput is stdin split the way istiod sees it: Istio configs (validated as the
// webhook would), Kubernetes Services (for the service registry) and Secrets (for pull secrets).
type controlPlaneInput struct {
	configs  []config.Config
	services []*model.Service
	kube     []corev1.Service
	secrets  []kuberuntime.Object // *corev1.Secret, for the fake Kubernetes client
	ignored  []string
}

func parseControlPlaneInput(input []byte, f controlPlaneFlags) (*controlPlaneInput, error) {
	out := &controlPlaneInput{ignored: []string{}}
	decoder := kubeyaml.NewYAMLOrJSONDecoder(bytes.NewReader(input), 512*1024)
	for index := 0; ; index++ {
		var raw json.RawMessage
		err := decoder.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d of stdin is not YAML: %w", index, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
			continue
		}
		obj := crd.IstioKind{}
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, fmt.Errorf("document %d of stdin: %w", index, err)
		}
		where := fmt.Sprintf("document %d (%s %s/%s)", index, obj.Kind, obj.Namespace, obj.Name)
		gvk := obj.GroupVersionKind()
		if s, ok := collections.PilotGatewayAPI().FindByGroupVersionAliasesKind(resource.FromKubernetesGVK(&gvk)); ok {
			cfg, err := crd.ConvertObject(s, &obj, "")
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if cfg.Namespace == "" {
				cfg.Namespace = "default"
			}
			// The API server stamps every object; the test harness would stamp each with the time
			// it is created (a nanosecond apart, so input order). A tree applied at once gets the
			// same second for all, so objects without a creationTimestamp all get one: the Unix
			// epoch (before any explicit one; then Istio orders them by name).
			if cfg.CreationTimestamp.IsZero() {
				cfg.CreationTimestamp = time.Unix(0, 0).UTC()
			}
			// istiod only ever sees what the validating webhook admitted.
			if _, err := s.ValidateConfig(*cfg); err != nil {
				return nil, fmt.Errorf("%s: Istio's validation refuses it: %w", where, err)
			}
			out.configs = append(out.configs, *cfg)
			continue
		}
		switch {
		case gvk.Group == "" && gvk.Kind == "Service":
			svc := corev1.Service{}
			if err := json.Unmarshal(raw, &svc); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if svc.Namespace == "" {
				svc.Namespace = "default"
			}
			out.kube = append(out.kube, svc)
			out.services = append(out.services,
				kubereg.ConvertService(svc, nil, "cluster.local", clusterID(f.clusterID), f.trustDomain))
		case gvk.Group == "" && gvk.Kind == "Secret":
			secret := &corev1.Secret{}
			if err := json.Unmarshal(raw, secret); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if secret.Namespace == "" {
				secret.Namespace = "default"
			}
			out.secrets = append(out.secrets, secret)
		default:
			out.ignored = append(out.ignored, fmt.Sprintf("%s %s/%s", obj.Kind, obj.Namespace, obj.Name))
		}
	}
	return out, nil
}

// instancesFor makes the gateway pod (ip, labels) an endpoint of every Service in its namespace
// whose selector its labels match, on each port's numeric targetPort: what Kubernetes' endpoints
// controller would report. A named targetPort would need the pod's container ports, which the
// oracle does not model, so it is refused.
func (in *controlPlaneInput) instancesFor(ip, namespace string, podLabels map[string]string) ([]*model.ServiceInstance, error) {
	var out []*model.ServiceInstance
	for i, svc := range in.kube {
		if svc.Namespace != namespace || len(svc.Spec.Selector) == 0 ||
			!labels.Instance(svc.Spec.Selector).SubsetOf(podLabels) {
			continue
		}
		service := in.services[i]
		for _, port := range svc.Spec.Ports {
			target := int(port.Port)
			switch {
			case port.TargetPort.Type == intstr.String && port.TargetPort.StrVal != "":
				return nil, fmt.Errorf("service %s/%s port %d: a named targetPort (%q) is not supported by the oracle; use a number",
					svc.Namespace, svc.Name, port.Port, port.TargetPort.StrVal)
			case port.TargetPort.IntVal != 0:
				target = int(port.TargetPort.IntVal)
			}
			servicePort, _ := service.Ports.GetByPort(int(port.Port))
			out = append(out, &model.ServiceInstance{
				Service:     service,
				ServicePort: servicePort,
				Endpoint: &model.IstioEndpoint{
					Addresses:       []string{ip},
					EndpointPort:    uint32(target),
					ServicePortName: port.Name,
					Labels:          podLabels,
					Namespace:       namespace,
				},
			})
		}
	}
	return out, nil
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, pair := range strings.Split(s, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("--labels %q: %q is not KEY=VALUE", s, pair)
		}
		out[key] = value
	}
	return out, nil
}

func clusterID(s string) cluster.ID { return cluster.ID(s) }

func linkedIstioVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "istio.io/istio" {
				return dep.Version
			}
		}
	}
	return "unknown"
}
