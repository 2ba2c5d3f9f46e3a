{{/* The chart's name. */}}
{{- define "ecs-worker-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name when it contains the chart name (so a
release named ecs-worker-operator gives the names deploy/ uses), otherwise <release>-<chart>.
*/}}
{{- define "ecs-worker-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Selector labels: stable across upgrades, distinct between releases. */}}
{{- define "ecs-worker-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecs-worker-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "ecs-worker-operator.labels" -}}
{{ include "ecs-worker-operator.selectorLabels" . }}
app.kubernetes.io/part-of: ecs-worker-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ecs-worker-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ecs-worker-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ecs-worker-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The leader election Lease; its name is fixed in the operator (controller::leader). */}}
{{- define "ecs-worker-operator.leaseName" -}}
ecs-worker-operator-leader
{{- end }}

{{/* RBAC rules (templates/rbac.yaml; deploy/base/rbac.yaml explains each). */}}
{{- define "ecs-worker-operator.workerRules" -}}
- apiGroups: ["ecsworker.dev"]
  resources: ["ecsselfterminatingworkers"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["ecsworker.dev"]
  resources: ["ecsselfterminatingworkers/status", "ecsselfterminatingworkers/finalizers"]
  verbs: ["patch", "update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- define "ecs-worker-operator.clusterIdRule" -}}
# The kube-system namespace's UID is the default cluster identity in owner tags.
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: ["kube-system"]
  verbs: ["get"]
{{- end }}
{{- define "ecs-worker-operator.eventRules" -}}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
