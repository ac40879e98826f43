// Command add-header is the seed's wasm-add-header extension: it adds or sets
// configured headers on requests and responses passing through Envoy.
//
// Configuration is parsed and validated once, in OnPluginStart; a bad
// configuration fails plugin start with one CRITICAL line naming the problem.
// Nothing is logged per request at info level or above.
//
// Messages are joined with + rather than the SDK's Log*f: fmt (and the
// reflection under it) would be linked in for them alone.
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func init() {
	proxywasm.SetVMContext(&vmContext{})
}

// main is required by the Go toolchain but never called by the host.
func main() {}

type vmContext struct {
	types.DefaultVMContext
}

func (*vmContext) NewPluginContext(contextID uint32) types.PluginContext {
	return &pluginContext{}
}

type pluginContext struct {
	types.DefaultPluginContext
	config *pluginConfig
}

func (p *pluginContext) OnPluginStart(pluginConfigurationSize int) types.OnPluginStartStatus {
	var data []byte
	if pluginConfigurationSize > 0 {
		var err error
		data, err = proxywasm.GetPluginConfiguration()
		if err != nil {
			proxywasm.LogCritical("invalid configuration: cannot read plugin configuration: " + err.Error())
			return types.OnPluginStartStatusFailed
		}
	}
	cfg, err := parseConfig(data)
	if err != nil {
		proxywasm.LogCritical(err.Error())
		return types.OnPluginStartStatusFailed
	}
	p.config = cfg
	return types.OnPluginStartStatusOK
}

func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{config: p.config}
}

type httpContext struct {
	types.DefaultHttpContext
	config *pluginConfig
}

func (h *httpContext) OnHttpRequestHeaders(numHeaders int, endOfStream bool) types.Action {
	for _, r := range h.config.request {
		var err error
		if r.action == actionSet {
			err = proxywasm.ReplaceHttpRequestHeader(r.name, r.value)
		} else {
			err = proxywasm.AddHttpRequestHeader(r.name, r.value)
		}
		if err != nil {
			proxywasm.LogError("cannot set request header " + r.name + ": " + err.Error())
		}
	}
	return types.ActionContinue
}

func (h *httpContext) OnHttpResponseHeaders(numHeaders int, endOfStream bool) types.Action {
	for _, r := range h.config.response {
		var err error
		if r.action == actionSet {
			err = proxywasm.ReplaceHttpResponseHeader(r.name, r.value)
		} else {
			err = proxywasm.AddHttpResponseHeader(r.name, r.value)
		}
		if err != nil {
			proxywasm.LogError("cannot set response header " + r.name + ": " + err.Error())
		}
	}
	return types.ActionContinue
}
