{{/* Names, labels, and the checks of the values that no template could render well. */}}

{{- define "ace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The base name of every resource. Cut to 45 characters: a StatefulSet's pods carry
controller-revision-hash=<name>-<10 characters>, a label value of 63 at most, and the HA
replica's StatefulSet adds "-r1".
*/}}
{{- define "ace.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ace.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ace.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ace.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ace.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where things are mounted in the container. */}}
{{- define "ace.configDir" -}}/etc/atlas-cost-exporter/config{{- end }}
{{- define "ace.credentialsDir" -}}/etc/atlas-cost-exporter/credentials{{- end }}
{{- define "ace.orgSecretsDir" -}}/etc/atlas-cost-exporter/secrets{{- end }}
{{- define "ace.webDir" -}}/etc/atlas-cost-exporter/web{{- end }}
{{- define "ace.storagePath" -}}/var/lib/atlas-cost-exporter{{- end }}

{{/* Whether the chart renders a configuration file. */}}
{{- define "ace.hasConfigFile" -}}
{{- if or .Values.config.file .Values.config.orgs .Values.config.budgets }}true{{ end }}
{{- end }}

{{/* The Secret names of config.orgs' credentials, each once, in order. */}}
{{- define "ace.orgSecrets" -}}
{{- $names := list }}
{{- range .Values.config.orgs }}
{{- with .credentials }}
{{- if not (has .existingSecret $names) }}
{{- $names = append $names .existingSecret }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* The volume name of an org Secret: a DNS label whatever the Secret's name. */}}
{{- define "ace.orgSecretVolume" -}}
{{- printf "org-secret-%s" (sha256sum . | trunc 10) }}
{{- end }}

{{/*
Checks the values; each failure names the value that is wrong. Included by every
template that depends on them, so `helm template` and `helm install` stop before anything
is applied.
*/}}
{{- define "ace.validate" -}}
{{- $v := .Values }}
{{- if not (has $v.credentials.type (list "serviceAccount" "apiKey" "none")) }}
{{- fail (printf "credentials.type: %q must be serviceAccount, apiKey or none" $v.credentials.type) }}
{{- end }}
{{- if and (ne $v.credentials.type "none") (not $v.credentials.existingSecret) }}
{{- fail "credentials.existingSecret: name the existing Secret holding the Atlas credentials (or set credentials.type: none when every org of config.orgs has its own)" }}
{{- end }}
{{- if and $v.config.file (or $v.config.orgs $v.config.budgets) }}
{{- fail "config.file: give either a whole file or config.orgs and config.budgets, not both" }}
{{- end }}
{{- if not (or $v.atlas.orgIds $v.config.orgs $v.config.file) }}
{{- fail "atlas.orgIds: no org to export; give atlas.orgIds, config.orgs or config.file" }}
{{- end }}
{{- if and (eq $v.credentials.type "none") $v.atlas.orgIds }}
{{- fail "atlas.orgIds: these orgs take the credentials of `credentials`, whose type is none" }}
{{- end }}
{{- range $i, $org := $v.config.orgs }}
{{- if not $org.id }}
{{- fail (printf "config.orgs[%d].id: every org needs its id" $i) }}
{{- end }}
{{- with $org.credentials }}
{{- if not .existingSecret }}
{{- fail (printf "config.orgs[%d].credentials.existingSecret: name the existing Secret of this org's credentials" $i) }}
{{- end }}
{{- if eq (default "serviceAccount" .type) "serviceAccount" }}
{{- if not .clientId }}
{{- fail (printf "config.orgs[%d].credentials.clientId: the service account's client id (mdb_sa_id_...)" $i) }}
{{- end }}
{{- else if eq .type "apiKey" }}
{{- if not .publicApiKey }}
{{- fail (printf "config.orgs[%d].credentials.publicApiKey: the API key's public half" $i) }}
{{- end }}
{{- else }}
{{- fail (printf "config.orgs[%d].credentials.type: %q must be serviceAccount or apiKey" $i .type) }}
{{- end }}
{{- else }}
{{- if eq $v.credentials.type "none" }}
{{- fail (printf "config.orgs[%d].credentials: this org has none, and credentials.type is none" $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- if lt (int $v.shards) 1 }}
{{- fail (printf "shards: %v must be at least 1" $v.shards) }}
{{- end }}
{{- if lt (int $v.replicasPerShard) 1 }}
{{- fail (printf "replicasPerShard: %v must be at least 1" $v.replicasPerShard) }}
{{- end }}
{{- if not (has $v.shardIndexFrom (list "auto" "podIndexLabel" "podName")) }}
{{- fail (printf "shardIndexFrom: %q must be auto, podIndexLabel or podName" $v.shardIndexFrom) }}
{{- end }}
{{- if and (or $v.web.tls $v.web.basicAuth) (not $v.web.existingSecret) }}
{{- fail "web.existingSecret: web.tls and web.basicAuth describe the web configuration of a Secret; name it" }}
{{- end }}
{{- end }}

{{/* Whether pods read their shard from the pod-index label (else from their name). */}}
{{- define "ace.shardFromLabel" -}}
{{- if eq .Values.shardIndexFrom "podIndexLabel" }}true
{{- else if and (eq .Values.shardIndexFrom "auto") (semverCompare ">=1.28.0-0" .Capabilities.KubeVersion.Version) }}true
{{- end }}
{{- end }}

{{/* The URL scheme of the metrics endpoint. */}}
{{- define "ace.scheme" -}}
{{- if .Values.web.tls }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}
