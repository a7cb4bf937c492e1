{{/* The chart's name, at most 63 characters (a DNS label). */}}
{{- define "token-orchestrator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of every object of the release. */}}
{{- define "token-orchestrator.fullname" -}}
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

{{- define "token-orchestrator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "token-orchestrator.labels" -}}
helm.sh/chart: {{ include "token-orchestrator.chart" . }}
{{ include "token-orchestrator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the server's pods: never change them on upgrade. */}}
{{- define "token-orchestrator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "token-orchestrator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "token-orchestrator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "token-orchestrator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the tokens: the user's, or the chart's. */}}
{{- define "token-orchestrator.tokensSecret" -}}
{{- default (include "token-orchestrator.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/*
A token of the chart's Secret: the value given, else the one already in the
Secret (so that an upgrade keeps the generated tokens), else a new random one.
Called with (dict "ctx" $ "value" ... "key" ...).
*/}}
{{- define "token-orchestrator.token" -}}
{{- if .value }}
{{- .value }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace (include "token-orchestrator.fullname" .ctx) }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 48 }}
{{- end }}
{{- end }}
{{- end }}

{{/* A Go duration from a number of seconds. */}}
{{- define "token-orchestrator.seconds" -}}
{{- printf "%ds" (int .) }}
{{- end }}

{{/* The pod's grace period: the whole shutdown, with room to spare. */}}
{{- define "token-orchestrator.gracePeriod" -}}
{{- add .Values.shutdown.drainDelaySeconds .Values.shutdown.timeoutSeconds .Values.shutdown.extraGraceSeconds }}
{{- end }}

{{/* Keys of the tokens in their Secret; the chart's own Secret has fixed ones. */}}
{{- define "token-orchestrator.adminTokenKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.adminTokenKey }}{{ else }}admin-token{{ end }}
{{- end }}
{{- define "token-orchestrator.clientTokenKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.clientTokenKey }}{{ else }}client-token{{ end }}
{{- end }}

{{/*
Failures the startup probe allows, every 5 seconds: a minute for the
database to answer, MIGRATE_TIMEOUT for the migrations, and a minute more.
*/}}
{{- define "token-orchestrator.startupFailures" -}}
{{- add 24 (div (add .Values.database.migrateTimeoutSeconds 4) 5) }}
{{- end }}
