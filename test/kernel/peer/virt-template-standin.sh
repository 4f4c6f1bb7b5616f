#!/usr/bin/env bash
# Writes stand-ins for kubevirt.io/virt-template-api and kubevirt.io/virt-template-client-go into
# $1/api and $1/client-go, for the peer build when the module proxy refuses both (build.sh).
#
# Why a stand-in is honest here: KubeVirt v1.9.0's device-manager package reaches them only through
# pkg/storage/reservation → pkg/storage/types → pkg/controller, whose VirtualMachineTemplate informer
# is virt-controller's; the device plugins (test/kernel/peer/main.go) never create it. What
# pkg/controller reads is all they hold: three names, an object type for the informer, and a client
# constructor. The constructor always fails, so a path that did reach it would fail loudly rather
# than run with a fake. Written for virtualio from what pkg/controller/virtinformers.go calls; no
# virt-template code is in them.
set -euo pipefail
out=$1
rm -rf "$out" && mkdir -p "$out/api/core/v1beta1" "$out/client-go/virttemplate"
cat > "$out/api/go.mod" <<'EOF'
module kubevirt.io/virt-template-api

go 1.24

require k8s.io/apimachinery v0.34.2
EOF
cat > "$out/api/core/names.go" <<'EOF'
// Package core (stand-in, see virtualio's test/kernel/peer/virt-template-standin.sh).
package core

const (
	GroupName            = "template.kubevirt.io"
	SingularResourceName = "virtualmachinetemplate"
	PluralResourceName   = "virtualmachinetemplates"
)
EOF
cat > "$out/api/core/v1beta1/types.go" <<'EOF'
// Package v1beta1 (stand-in): the object type of an informer the device plugins never start.
package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

type VirtualMachineTemplate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
}

func (t *VirtualMachineTemplate) DeepCopyObject() runtime.Object {
	if t == nil {
		return nil
	}
	c := *t
	t.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}
EOF
cat > "$out/client-go/go.mod" <<'EOF'
module kubevirt.io/virt-template-client-go

go 1.24

require k8s.io/client-go v0.34.2
EOF
cat > "$out/client-go/virttemplate/client.go" <<'EOF'
// Package virttemplate (stand-in): a client whose constructor always fails.
package virttemplate

import (
	"errors"

	"k8s.io/client-go/rest"
)

type TemplateV1beta1Interface interface {
	RESTClient() rest.Interface
}

type Interface interface {
	TemplateV1beta1() TemplateV1beta1Interface
}

func NewForConfig(*rest.Config) (Interface, error) {
	return nil, errors.New("kubevirt.io/virt-template-client-go: a stand-in in this build (virtualio's kernel peer); not available")
}
EOF
