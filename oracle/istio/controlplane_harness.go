package main

import (
	"fmt"
	"os"
	"runtime"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	kubesecrets "istio.io/istio/pilot/pkg/credentials/kube"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/multicluster"
)

type (
	routeConfiguration   = route.RouteConfiguration
	typedExtensionConfig = corev3.TypedExtensionConfig
)

// oracleFailer is the test.Failer Istio's test harness needs, for a program: a fatal error ends
// the question (its message becomes the oracle's error) instead of a test.
type oracleFailer struct {
	cleanups []func()
	tempDirs []string
}

type oracleFatal struct{ message string }

func newOracleFailer() *oracleFailer { return &oracleFailer{} }

func (f *oracleFailer) Fail()             { panic(oracleFatal{"Fail called"}) }
func (f *oracleFailer) FailNow()          { panic(oracleFatal{"FailNow called"}) }
func (f *oracleFailer) Fatal(args ...any) { panic(oracleFatal{fmt.Sprint(args...)}) }
func (f *oracleFailer) Fatalf(format string, args ...any) {
	panic(oracleFatal{fmt.Sprintf(format, args...)})
}
func (f *oracleFailer) Log(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }
func (f *oracleFailer) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (f *oracleFailer) Helper()                         {}
func (f *oracleFailer) Cleanup(fn func())               { f.cleanups = append(f.cleanups, fn) }
func (f *oracleFailer) Skip(args ...any)                { panic(oracleFatal{"skip: " + fmt.Sprint(args...)}) }

func (f *oracleFailer) TempDir() string {
	dir, err := os.MkdirTemp("", "istio-oracle-")
	if err != nil {
		f.Fatal(err)
	}
	f.tempDirs = append(f.tempDirs, dir)
	return dir
}

// run calls fn, turning a Fatal inside it into an error.
func (f *oracleFailer) run(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if fatal, ok := r.(oracleFatal); ok {
				err = fmt.Errorf("istio's harness failed: %s", fatal.message)
				return
			}
			if rerr, ok := r.(runtime.Error); ok {
				err = fmt.Errorf("panic in Istio's code: %v", rerr)
				return
			}
			panic(r)
		}
	}()
	fn()
	return nil
}

// cleanup runs the registered cleanups (last first): stops the harness's goroutines.
func (f *oracleFailer) cleanup() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	for _, dir := range f.tempDirs {
		_ = os.RemoveAll(dir)
	}
}

// newCredentials is istiod's credentials controller (the one its ECDS generator asks for Wasm
// pull secrets) over the fake Kubernetes client; call before the client starts.
func newCredentials(client kube.Client, cluster string, stop chan struct{}) *kubesecrets.Multicluster {
	mc := multicluster.NewFakeController()
	creds := kubesecrets.NewMulticluster(clusterID(cluster), mc)
	mc.Add(clusterID(cluster), client, stop)
	return creds
}

// waitSynced polls synced every 10 ms for at most timeout.
func waitSynced(synced func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !synced() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
