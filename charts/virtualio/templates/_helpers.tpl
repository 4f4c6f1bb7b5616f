{{/*
Names and labels shared by every template. Everything here is a pure function of the values and the
release: no lookup, no random values, so `helm template` output is stable (Argo CD, Flux).
*/}}

{{- define "virtualio.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "virtualio.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "virtualio.operatorName" -}}{{ include "virtualio.fullname" . }}-operator{{- end -}}
{{- define "virtualio.agentName" -}}{{ include "virtualio.fullname" . }}-agent{{- end -}}

{{/* The Kubernetes user names of the two service accounts, as the API server sees them. */}}
{{- define "virtualio.operatorUser" -}}system:serviceaccount:{{ .Release.Namespace }}:{{ include "virtualio.operatorName" . }}{{- end -}}
{{- define "virtualio.agentUser" -}}system:serviceaccount:{{ .Release.Namespace }}:{{ include "virtualio.agentName" . }}{{- end -}}

{{- define "virtualio.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "virtualio.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: virtualio
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "virtualio.operatorSelector" -}}
app.kubernetes.io/name: {{ include "virtualio.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "virtualio.agentSelector" -}}
app.kubernetes.io/name: {{ include "virtualio.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "virtualio.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Security context shared by every non-root container (operator, test). */}}
{{- define "virtualio.restrictedContainerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "virtualio.validate" -}}
{{- if and (not .Values.operator.leaderElection.enabled) (gt (int .Values.operator.replicas) 1) -}}
{{- fail "operator.leaderElection.enabled=false needs operator.replicas <= 1: two operators without a leader would fight over the same objects" -}}
{{- end -}}
{{- if and (not .Values.kubevirt.managePermittedHostDevices) (gt (len .Values.kubevirt.extraPermittedHostDevices) 0) -}}
{{- fail "kubevirt.extraPermittedHostDevices needs kubevirt.managePermittedHostDevices=true: the operator only merges extra entries into lists it owns" -}}
{{- end -}}
{{- end -}}
