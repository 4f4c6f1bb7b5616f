// Command kubelet-dm runs the kubelet's own device-plugin registration server and plugin client
// (k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/plugin/v1beta1) on a socket directory chosen by
// flag, so a test can drive a device plugin exactly the way a real kubelet would, without root.
//
// Protocol (one JSON object per line):
//
//	stdout events: {"event":"ready","socket":...}
//	               {"event":"registered","resource":...,"endpoint":...,"options":{...}}
//	               {"event":"devices","resource":...,"devices":[{"id","health","topology"}],"healthy":N,"unhealthy":N}
//	               {"event":"disconnected","resource":...}
//	               {"event":"kubelet-error","msg":...,"error":...,"keysAndValues":{...}}
//	               {"event":"response","id":...,"op":...,"ok":bool,...}
//	stdin commands: {"id":..,"op":"allocate","resource":...,"ids":[...]}
//	                {"id":..,"op":"preferred","resource":...,"available":[...],"mustInclude":[...],"size":N}
//	                {"id":..,"op":"prestart","resource":...,"ids":[...]}
//	                {"id":..,"op":"state"}
//	                {"id":..,"op":"restart"}
//	                {"id":..,"op":"stop"}
//
// Only the callbacks of the kubelet's ClientHandler / RegistrationHandler are written here; they
// follow the kubelet's ManagerImpl: PluginConnected asks the plugin for its options, every
// ListAndWatch message replaces the resource's device list, a disconnect marks the endpoint
// stopped, and Allocate / GetPreferredAllocation / PreStartContainer are sent with exactly one
// container request, as endpointImpl does. The directory cleanup keeps the checkpoint file and
// every non-socket entry and removes every unix socket, as ManagerImpl.CleanupPluginDirectory does.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	plugin "k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/plugin/v1beta1"
)

// checkpointName is the kubelet's device-manager checkpoint file, which its cleanup keeps.
const checkpointName = "kubelet_internal_checkpoint"

type out struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *out) emit(v map[string]any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(v)
}

type endpoint struct {
	plugin  plugin.DevicePlugin
	options *api.DevicePluginOptions
	stopped bool
	devices []*api.Device
}

// handler implements plugin.ClientHandler and plugin.RegistrationHandler.
type handler struct {
	out       *out
	mu        sync.Mutex
	endpoints map[string]*endpoint
}

func (h *handler) CleanupPluginDirectory(logger klog.Logger, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if e.Name() == checkpointName {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			logger.Error(err, "Failed to stat file", "path", p)
			continue
		}
		if st.IsDir() || st.Mode()&os.ModeSocket == 0 {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *handler) PluginConnected(ctx context.Context, resource string, p plugin.DevicePlugin) error {
	opts, err := p.API().GetDevicePluginOptions(ctx, &api.Empty{})
	if err != nil {
		return fmt.Errorf("failed to get device plugin options: %v", err)
	}
	h.mu.Lock()
	h.endpoints[resource] = &endpoint{plugin: p, options: opts}
	h.mu.Unlock()
	h.out.emit(map[string]any{
		"event":    "registered",
		"resource": resource,
		"endpoint": filepath.Base(p.SocketPath()),
		"socket":   p.SocketPath(),
		"options": map[string]any{
			"preStartRequired":                opts.PreStartRequired,
			"getPreferredAllocationAvailable": opts.GetPreferredAllocationAvailable,
		},
	})
	return nil
}

func (h *handler) PluginDisconnected(_ klog.Logger, resource string) {
	h.mu.Lock()
	ep, ok := h.endpoints[resource]
	if ok {
		ep.stopped = true
		// The kubelet marks every device of a disconnected resource unhealthy.
		for _, d := range ep.devices {
			d.Health = api.Unhealthy
		}
	}
	h.mu.Unlock()
	if ok {
		h.out.emit(map[string]any{"event": "disconnected", "resource": resource})
	}
}

func (h *handler) PluginListAndWatchReceiver(_ klog.Logger, resource string, resp *api.ListAndWatchResponse) {
	devs := make([]map[string]any, 0, len(resp.Devices))
	healthy := 0
	for _, d := range resp.Devices {
		var numa []int64
		if d.Topology != nil {
			numa = []int64{}
			for _, n := range d.Topology.Nodes {
				numa = append(numa, n.ID)
			}
		}
		if d.Health == api.Healthy {
			healthy++
		}
		devs = append(devs, map[string]any{"id": d.ID, "health": d.Health, "topology": numa})
	}
	h.mu.Lock()
	if ep, ok := h.endpoints[resource]; ok {
		ep.devices = resp.Devices
	}
	h.mu.Unlock()
	h.out.emit(map[string]any{
		"event": "devices", "resource": resource, "devices": devs,
		"healthy": healthy, "unhealthy": len(resp.Devices) - healthy,
	})
}

// get returns the live endpoint of a resource, or the kubelet's error text for a missing/stopped one.
func (h *handler) get(resource string) (*endpoint, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ep, ok := h.endpoints[resource]
	if !ok {
		return nil, fmt.Errorf("unknown Device Plugin %s", resource)
	}
	if ep.stopped {
		return nil, fmt.Errorf("endpoint %v has been stopped", resource)
	}
	return ep, nil
}

// errorSink turns the kubelet's error logs into events, so a test sees what the kubelet rejected.
// Info logs up to the chosen verbosity go to stderr as plain text.
type errorSink struct {
	out       *out
	verbosity int
	values    []any
}

func (s *errorSink) Init(logr.RuntimeInfo)        {}
func (s *errorSink) Enabled(level int) bool       { return level <= s.verbosity }
func (s *errorSink) WithName(string) logr.LogSink { return s }
func (s *errorSink) Info(level int, msg string, kv ...any) {
	fmt.Fprintln(os.Stderr, append(append([]any{"kubelet:", msg}, s.values...), kv...)...)
}
func (s *errorSink) WithValues(kv ...any) logr.LogSink {
	return &errorSink{out: s.out, verbosity: s.verbosity, values: append(append([]any{}, s.values...), kv...)}
}
func (s *errorSink) Error(err error, msg string, kv ...any) {
	m := map[string]any{}
	all := append(append([]any{}, s.values...), kv...)
	for i := 0; i+1 < len(all); i += 2 {
		m[fmt.Sprint(all[i])] = fmt.Sprint(all[i+1])
	}
	ev := map[string]any{"event": "kubelet-error", "msg": msg, "keysAndValues": m}
	if err != nil {
		ev["error"] = err.Error()
	}
	s.out.emit(ev)
}

type command struct {
	ID          any      `json:"id"`
	Op          string   `json:"op"`
	Resource    string   `json:"resource"`
	IDs         []string `json:"ids"`
	Available   []string `json:"available"`
	MustInclude []string `json:"mustInclude"`
	Size        int      `json:"size"`
}

func grpcError(err error) map[string]any {
	st, _ := status.FromError(err)
	return map[string]any{"ok": false, "error": err.Error(), "code": st.Code().String(), "message": st.Message()}
}

func allocateResponse(r *api.AllocateResponse) []map[string]any {
	res := []map[string]any{}
	for _, c := range r.ContainerResponses {
		devices := []map[string]any{}
		for _, d := range c.Devices {
			devices = append(devices, map[string]any{"containerPath": d.ContainerPath, "hostPath": d.HostPath, "permissions": d.Permissions})
		}
		mounts := []map[string]any{}
		for _, m := range c.Mounts {
			mounts = append(mounts, map[string]any{"containerPath": m.ContainerPath, "hostPath": m.HostPath, "readOnly": m.ReadOnly})
		}
		cdi := []string{}
		for _, d := range c.CdiDevices {
			cdi = append(cdi, d.Name)
		}
		envs, annotations := c.Envs, c.Annotations
		if envs == nil {
			envs = map[string]string{}
		}
		if annotations == nil {
			annotations = map[string]string{}
		}
		res = append(res, map[string]any{"envs": envs, "devices": devices, "mounts": mounts, "annotations": annotations, "cdiDevices": cdi})
	}
	return res
}

type harness struct {
	out    *out
	h      *handler
	socket string
	server plugin.Server
	logger klog.Logger
}

func (hs *harness) start() error {
	s, err := plugin.NewServer(hs.logger, hs.socket, hs.h, hs.h)
	if err != nil {
		return err
	}
	if err := s.Start(hs.logger); err != nil {
		return err
	}
	hs.server = s
	hs.out.emit(map[string]any{"event": "ready", "socket": s.SocketPath()})
	return nil
}

func (hs *harness) stop() error {
	if hs.server == nil {
		return nil
	}
	err := hs.server.Stop(hs.logger)
	hs.server = nil
	return err
}

func (hs *harness) do(ctx context.Context, c command) map[string]any {
	switch c.Op {
	case "allocate":
		ep, err := hs.h.get(c.Resource)
		if err != nil {
			return map[string]any{"ok": false, "error": err.Error()}
		}
		resp, err := ep.plugin.API().Allocate(ctx, &api.AllocateRequest{
			ContainerRequests: []*api.ContainerAllocateRequest{{DevicesIds: c.IDs}},
		})
		if err != nil {
			return grpcError(err)
		}
		r := map[string]any{"ok": true, "containerResponses": allocateResponse(resp)}
		if len(resp.ContainerResponses) == 0 {
			// What the kubelet reports for an empty answer (it only reads the first container response).
			r["ok"] = false
			r["error"] = "no containers return in allocation response"
		}
		return r
	case "preferred":
		ep, err := hs.h.get(c.Resource)
		if err != nil {
			return map[string]any{"ok": false, "error": err.Error()}
		}
		if ep.options == nil || !ep.options.GetPreferredAllocationAvailable {
			// The kubelet skips the call when the plugin did not advertise it.
			return map[string]any{"ok": true, "called": false}
		}
		resp, err := ep.plugin.API().GetPreferredAllocation(ctx, &api.PreferredAllocationRequest{
			ContainerRequests: []*api.ContainerPreferredAllocationRequest{{
				AvailableDeviceIDs: c.Available, MustIncludeDeviceIDs: c.MustInclude, AllocationSize: int32(c.Size),
			}},
		})
		if err != nil {
			return grpcError(err)
		}
		all := [][]string{}
		for _, cr := range resp.ContainerResponses {
			all = append(all, append([]string{}, cr.DeviceIDs...))
		}
		ids := []string{}
		if len(all) > 0 {
			ids = all[0]
		}
		return map[string]any{"ok": true, "called": true, "deviceIDs": ids, "containerResponses": all}
	case "prestart":
		ep, err := hs.h.get(c.Resource)
		if err != nil {
			return map[string]any{"ok": false, "error": err.Error()}
		}
		if ep.options == nil || !ep.options.PreStartRequired {
			return map[string]any{"ok": true, "called": false}
		}
		if _, err := ep.plugin.API().PreStartContainer(ctx, &api.PreStartContainerRequest{DevicesIds: c.IDs}); err != nil {
			return grpcError(err)
		}
		return map[string]any{"ok": true, "called": true}
	case "state":
		hs.h.mu.Lock()
		defer hs.h.mu.Unlock()
		names := make([]string, 0, len(hs.h.endpoints))
		for n := range hs.h.endpoints {
			names = append(names, n)
		}
		sort.Strings(names)
		res := map[string]any{}
		for _, n := range names {
			ep := hs.h.endpoints[n]
			healthy, unhealthy := 0, 0
			for _, d := range ep.devices {
				if d.Health == api.Healthy {
					healthy++
				} else {
					unhealthy++
				}
			}
			// capacity = healthy + unhealthy, allocatable = healthy (ManagerImpl.GetCapacity).
			res[n] = map[string]any{"stopped": ep.stopped, "capacity": healthy + unhealthy, "allocatable": healthy}
		}
		return map[string]any{"ok": true, "resources": res}
	case "restart":
		if err := hs.stop(); err != nil {
			return map[string]any{"ok": false, "error": err.Error()}
		}
		// Start() runs CleanupPluginDirectory, like a freshly started kubelet.
		if err := hs.start(); err != nil {
			return map[string]any{"ok": false, "error": err.Error()}
		}
		return map[string]any{"ok": true}
	default:
		return map[string]any{"ok": false, "error": fmt.Sprintf("unknown op %q", c.Op)}
	}
}

func main() {
	dir := flag.String("socket-dir", "", "device plugin directory (absolute); kubelet.sock is created there")
	verbosity := flag.Int("v", 0, "verbosity of the kubelet code's info logs on stderr")
	flag.Parse()
	if *dir == "" || !filepath.IsAbs(*dir) {
		fmt.Fprintln(os.Stderr, "kubelet-dm: --socket-dir must be an absolute path")
		os.Exit(2)
	}
	o := &out{enc: json.NewEncoder(os.Stdout)}
	// The kubelet code logs through the global klog logger: its errors become events on stdout,
	// its info logs up to --v go to stderr.
	klog.SetLogger(logr.New(&errorSink{out: o, verbosity: *verbosity}))
	logger := klog.Background()

	hs := &harness{out: o, h: &handler{out: o, endpoints: map[string]*endpoint{}}, socket: filepath.Join(*dir, "kubelet.sock"), logger: logger}
	if err := hs.start(); err != nil {
		o.emit(map[string]any{"event": "fatal", "error": err.Error()})
		os.Exit(1)
	}

	ctx := context.Background()
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var c command
		if err := json.Unmarshal(line, &c); err != nil {
			o.emit(map[string]any{"event": "response", "ok": false, "error": "bad command: " + err.Error()})
			continue
		}
		if c.Op == "stop" {
			break
		}
		r := hs.do(ctx, c)
		r["event"] = "response"
		r["id"] = c.ID
		r["op"] = c.Op
		o.emit(r)
	}
	// stdin closed or "stop": stop like a kubelet shutting down.
	_ = hs.stop()
	o.emit(map[string]any{"event": "stopped"})
}
