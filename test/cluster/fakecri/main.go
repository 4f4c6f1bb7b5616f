// fakecri serves the in-memory CRI runtime from k8s.io/cri-client/pkg/fake on a unix socket so a
// real kubelet can run pods on a machine without a container runtime. Every CreateContainer request
// the kubelet sends is appended as one JSON line to -record, so tests can read the exact env vars,
// devices and mounts the kubelet passed to the runtime.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-client/pkg/fake"
)

type recorder struct {
	mu  sync.Mutex
	out *os.File
}

type createRecord struct {
	PodSandboxID string                  `json:"podSandboxId"`
	PodName      string                  `json:"podName"`
	PodNamespace string                  `json:"podNamespace"`
	PodUID       string                  `json:"podUid"`
	Container    string                  `json:"container"`
	Envs         map[string]string       `json:"envs"`
	Devices      []*runtimeapi.Device    `json:"devices"`
	Mounts       []*runtimeapi.Mount     `json:"mounts"`
	CDIDevices   []*runtimeapi.CDIDevice `json:"cdiDevices"`
	Annotations  map[string]string       `json:"annotations"`
}

func (r *recorder) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if c, ok := req.(*runtimeapi.CreateContainerRequest); ok && r.out != nil {
		rec := createRecord{PodSandboxID: c.PodSandboxId, Envs: map[string]string{}}
		if sc := c.GetSandboxConfig(); sc != nil && sc.Metadata != nil {
			rec.PodName, rec.PodNamespace, rec.PodUID = sc.Metadata.Name, sc.Metadata.Namespace, sc.Metadata.Uid
		}
		if cfg := c.GetConfig(); cfg != nil {
			if cfg.Metadata != nil {
				rec.Container = cfg.Metadata.Name
			}
			for _, e := range cfg.Envs {
				rec.Envs[e.Key] = string(e.Value)
			}
			rec.Devices, rec.Mounts, rec.CDIDevices, rec.Annotations = cfg.Devices, cfg.Mounts, cfg.CDIDevices, cfg.Annotations
		}
		line, _ := json.Marshal(rec)
		r.mu.Lock()
		_, _ = r.out.Write(append(line, '\n'))
		r.mu.Unlock()
	}
	return handler(ctx, req)
}

func main() {
	socket := flag.String("socket", "/run/virtualio-fakecri/cri.sock", "unix socket path to serve the CRI on")
	record := flag.String("record", "", "file that receives one JSON line per CreateContainer request")
	flag.Parse()

	rec := &recorder{}
	if *record != "" {
		f, err := os.OpenFile(*record, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			log.Fatalf("open record file: %v", err)
		}
		rec.out = f
	}

	rt := fake.NewFakeRemoteRuntime()
	rt.RuntimeService.FakeLinuxConfiguration = &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS}
	rt.RuntimeService.FakeStatus = &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true},
		{Type: runtimeapi.NetworkReady, Status: true},
	}}

	// Pulled images need an ID and a size, or the kubelet refuses to start containers from them
	// ("Id or size of image ... is not set"); every pull succeeds with this fixed size.
	rt.ImageService.SetFakeImageSize(64 << 20)

	srv := grpc.NewServer(grpc.UnaryInterceptor(rec.intercept))
	runtimeapi.RegisterRuntimeServiceServer(srv, rt)
	runtimeapi.RegisterImageServiceServer(srv, rt)

	if err := os.MkdirAll(filepath.Dir(*socket), 0o755); err != nil {
		log.Fatalf("create socket dir: %v", err)
	}
	_ = os.Remove(*socket)
	lis, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatalf("listen on %s: %v", *socket, err)
	}
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Printf("serve: %v", err)
		}
	}()
	log.Printf("fake CRI serving on %s", *socket)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Stop()
	_ = os.Remove(*socket)
}
