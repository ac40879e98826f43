package main

// op "credential": which docker config istiod puts in a WasmPlugin's ECDS config for its
// imagePullSecret, given the cluster's Secrets.
//
// istiod normalises the name (credentials.ToResourceName, credentials.ParseResourceName) and
// forces the WasmPlugin's own namespace (pilot/pkg/model/extensions.go,
// convertToTrafficExtensionWrapper: "we require secret resource referenced by TrafficExtension
// co-located with TrafficExtension in the same namespace"); the ECDS generator then reads the Secret
// through the credentials controller (pilot/pkg/xds/ecds.go GeneratePullSecrets ->
// CredentialsController.GetDockerCredential), and a Secret it cannot read becomes an empty value
// (pilot/pkg/networking/core/extension/extensionfilter.go updatePluginConfig), which the agent
// refuses ("missing image pulling secret"). The lookup here is Istio's controller over a fake
// Kubernetes client holding the given Secrets; the namespace forcing is the one line restated.

import (
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	credkube "istio.io/istio/pilot/pkg/credentials/kube"
	"istio.io/istio/pilot/pkg/model/credentials"
	"istio.io/istio/pkg/kube"
)

func agentCredential(req *agentRequest) (*agentAnswer, error) {
	objects := make([]runtime.Object, 0, len(req.Secrets))
	for i, raw := range req.Secrets {
		secret := &corev1.Secret{}
		if err := json.Unmarshal(raw, secret); err != nil {
			return nil, fmt.Errorf("secrets[%d] is not a Secret: %v", i, err)
		}
		objects = append(objects, secret)
	}
	resource, err := credentials.ParseResourceName(credentials.ToResourceName(req.Name), req.Namespace, "", "")
	if err != nil {
		return &agentAnswer{Error: fmt.Sprintf("istiod drops the imagePullSecret: %v", err)}, nil
	}
	resource.Namespace = req.Namespace

	client := kube.NewFakeClient(objects...)
	controller := credkube.NewCredentialsController(client, nil, true)
	stop := make(chan struct{})
	defer close(stop)
	client.RunAndWait(stop)
	deadline := time.Now().Add(30 * time.Second)
	for !controller.HasSynced() {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the credentials controller did not sync in 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cred, err := controller.GetDockerCredential(resource.Name, resource.Namespace)
	if err != nil {
		return &agentAnswer{Error: err.Error()}, nil
	}
	text := string(cred)
	return &agentAnswer{Credential: &text}, nil
}
