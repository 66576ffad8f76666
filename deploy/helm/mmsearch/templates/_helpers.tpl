{{/* Names, labels and the service image. */}}

{{- define "mmsearch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mmsearch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The four service targets, in the order of the architecture. */}}
{{- define "mmsearch.targets" -}}
embedder indexer searcher reranker
{{- end -}}

{{- define "mmsearch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mmsearch.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* mmsearch.io/job becomes the Prometheus job label (ServiceMonitor jobLabel), so the
rules and dashboards can name mmsearch-<component> whatever the release is called. */}}
{{- define "mmsearch.labels" -}}
{{ include "mmsearch.selectorLabels" . }}
app.kubernetes.io/part-of: mmsearch
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
mmsearch.io/job: mmsearch-{{ .component }}
{{- end -}}

{{- define "mmsearch.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{ .image.repository }}:{{ $tag }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{- define "mmsearch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mmsearch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mmsearch.secretName" -}}
{{- default (printf "%s-auth" (include "mmsearch.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Address the services call each other at: the headless Service through DNS, so the caller's
round-robin policy spreads requests over every ready pod (a ClusterIP pins one connection to one
pod). */}}
{{- define "mmsearch.addr" -}}
dns:///{{ include "mmsearch.fullname" .root }}-{{ .component }}-pods:{{ .root.Values.ports.grpc }}
{{- end -}}

{{/* Hardened security context shared by every container. */}}
{{- define "mmsearch.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mmsearch.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mmsearch.topologySpread" -}}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
{{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "mmsearch.selectorLabels" $ | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Replicas the indexer may scale to: more consumers than partitions would idle. */}}
{{- define "mmsearch.indexerMaxReplicas" -}}
{{- min (int .Values.indexer.autoscaling.maxReplicas) (int .Values.kafka.partitions) -}}
{{- end -}}
