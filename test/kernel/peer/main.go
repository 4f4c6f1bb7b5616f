// Command kubevirt-dp runs KubeVirt's own built-in host-device plugins, the ones virt-handler runs on
// every node (kubevirt.io/kubevirt pkg/virt-handler/device-manager), outside a cluster, so the
// real-kernel benchmark can put them side by side with the virtualio agent on the same VFs, mdevs
// and kubelet stand-in.
//
// It is virt-handler's own path, not a re-implementation: a DeviceController is given a cluster
// config whose KubeVirt CR permits the PCI vendor:device pairs and mediated-device type names given
// by flag; its refresh discovers the functions bound to vfio-pci and the mdevs of those types and
// starts one NewPCIDevicePlugin / NewMediatedDevicePlugin per resource, with virt-handler's
// re-registration backoff. The KubeVirt CR lives in an informer store that is filled once and never
// synced (there is no API server), and there is no Node object (mdev type creation from the CR is
// not exercised: the mdevs must exist, as the benchmark has them).
//
// KubeVirt's plugins use fixed paths: the kubelet socket /var/lib/kubelet/device-plugins/kubelet.sock,
// their own sockets beside it, sysfs under /sys, and /dev/vfio seen through /proc/1/root. Run it as
// root on the machine (or guest) whose devices it serves.
//
//	kubevirt-dp --pci 8086:10ca=kubevirt.io/igb-vf --mdev 'Dual port serial=kubevirt.io/mtty-2'
//
// Stdout: one JSON line {"event":"started",...} once the controller is running; KubeVirt's own
// logs go to stderr. SIGTERM/SIGINT stop every plugin (each sends an empty device list) and exit 0.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	v1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/log"

	virtconfig "kubevirt.io/kubevirt/pkg/virt-config"
	devicemanager "kubevirt.io/kubevirt/pkg/virt-handler/device-manager"
)

// pairs collects repeated "selector=resource" flags.
type pairs [][2]string

func (p *pairs) String() string { return fmt.Sprint(*p) }
func (p *pairs) Set(s string) error {
	i := strings.LastIndex(s, "=")
	if i <= 0 || i == len(s)-1 {
		return fmt.Errorf("%q: want selector=resourceName", s)
	}
	sel, res := strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+1:])
	if !strings.Contains(res, "/") {
		return fmt.Errorf("%q: the resource name needs a domain (example.com/name)", res)
	}
	*p = append(*p, [2]string{sel, res})
	return nil
}

// staticInformer is an informer whose store is filled by hand and which is never run: the cluster
// config only reads its store.
func staticInformer(obj runtime.Object) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListFunc:  func(metav1.ListOptions) (runtime.Object, error) { return nil, fmt.Errorf("no API server") },
		WatchFunc: func(metav1.ListOptions) (watch.Interface, error) { return nil, fmt.Errorf("no API server") },
	}
	return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

func main() {
	var pci, mdev pairs
	flag.Var(&pci, "pci", "permit PCI functions by vendor:device, as vendor:device=resourceName (repeatable)")
	flag.Var(&mdev, "mdev", "permit mediated devices by type name (mdev_type/name), as name=resourceName (repeatable)")
	node := flag.String("node-name", "kernel-guest", "node name given to the device controller")
	verbosity := flag.Int("log-verbosity", 2, "KubeVirt log verbosity (client-go/log)")
	flag.Parse()
	if len(pci) == 0 && len(mdev) == 0 {
		fmt.Fprintln(os.Stderr, "kubevirt-dp: give at least one --pci or --mdev")
		os.Exit(2)
	}
	if err := log.Log.SetVerbosityLevel(*verbosity); err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-dp: %v\n", err)
		os.Exit(2)
	}

	permitted := &v1.PermittedHostDevices{}
	for _, p := range pci {
		permitted.PciHostDevices = append(permitted.PciHostDevices, v1.PciHostDevice{PCIVendorSelector: p[0], ResourceName: p[1]})
	}
	for _, m := range mdev {
		permitted.MediatedDevices = append(permitted.MediatedDevices, v1.MediatedHostDevice{MDEVNameSelector: m[0], ResourceName: m[1]})
	}
	kv := &v1.KubeVirt{
		ObjectMeta: metav1.ObjectMeta{Name: "kubevirt", Namespace: "kubevirt", ResourceVersion: "1"},
		Spec:       v1.KubeVirtSpec{Configuration: v1.KubeVirtConfiguration{PermittedHostDevices: permitted}},
		Status:     v1.KubeVirtStatus{Phase: v1.KubeVirtPhaseDeployed},
	}
	kvInformer := staticInformer(&v1.KubeVirt{})
	if err := kvInformer.GetStore().Add(kv); err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-dp: %v\n", err)
		os.Exit(1)
	}
	cfg, err := virtconfig.NewClusterConfig(staticInformer(&extv1.CustomResourceDefinition{}), kvInformer, "kubevirt")
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-dp: cluster config: %v\n", err)
		os.Exit(1)
	}
	if got := cfg.GetPermittedHostDevices(); got == nil || len(got.PciHostDevices)+len(got.MediatedDevices) != len(pci)+len(mdev) {
		fmt.Fprintf(os.Stderr, "kubevirt-dp: the cluster config did not take the permitted devices: %+v\n", got)
		os.Exit(1)
	}

	// maxDevices and permissions only matter for the permanent (kvm/tun/vhost-net) plugins, of which
	// none is started here.
	ctrl := devicemanager.NewDeviceController(*node, 110, "rw", nil, cfg, cache.NewStore(cache.MetaNamespaceKeyFunc))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		ctrl.Run(stop)
		close(done)
	}()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"event": "started", "pid": os.Getpid(), "pci": pci, "mdev": mdev})

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	close(stop)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		fmt.Fprintln(os.Stderr, "kubevirt-dp: the device controller did not stop within 10 s")
	}
}
