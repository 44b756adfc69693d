{{/*
The chart name, or nameOverride.
*/}}
{{- define "driftstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: fullnameOverride, else the release
name (prefixed with the chart name unless it already contains it), at most 63
characters (the DNS label limit).
*/}}
{{- define "driftstream.fullname" -}}
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

{{- define "driftstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "driftstream.labels" -}}
helm.sh/chart: {{ include "driftstream.chart" . }}
{{ include "driftstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: driftstream
{{- end }}

{{/*
The labels that select the pods: fixed for the life of a release, since a
Deployment's selector cannot change.
*/}}
{{- define "driftstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "driftstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "driftstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "driftstream.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The port of /metrics, /healthz and /readyz: config.metrics.port.
*/}}
{{- define "driftstream.metricsPort" -}}
{{- $metrics := .Values.config.metrics | default dict }}
{{- $metrics.port | default 9308 | int }}
{{- end }}

{{- define "driftstream.tlsSecret" -}}
{{- .Values.kafkaAuth.tls.existingSecret | default .Values.kafkaAuth.existingSecret }}
{{- end }}

{{- define "driftstream.tlsMountPath" -}}
/etc/driftstream-tls
{{- end }}

{{/*
Fails the render when kafkaAuth is enabled without a Secret to read from.
*/}}
{{- define "driftstream.validateKafkaAuth" -}}
{{- $auth := .Values.kafkaAuth }}
{{- if and $auth.sasl.enabled (not $auth.existingSecret) }}
{{- fail "kafkaAuth.sasl.enabled is true but kafkaAuth.existingSecret is empty: name the Secret that holds the SASL username and password" }}
{{- end }}
{{- if and $auth.tls.enabled (not (include "driftstream.tlsSecret" .)) (or $auth.tls.caKey $auth.tls.certKey $auth.tls.keyKey) }}
{{- fail "kafkaAuth.tls.enabled is true but neither kafkaAuth.tls.existingSecret nor kafkaAuth.existingSecret is set: name the Secret that holds the TLS files, or set caKey, certKey and keyKey empty to use the system CA store" }}
{{- end }}
{{- if ne (empty $auth.tls.certKey) (empty $auth.tls.keyKey) }}
{{- fail "kafkaAuth.tls.certKey and kafkaAuth.tls.keyKey go together: set both for mutual TLS, or neither" }}
{{- end }}
{{- if and $auth.tls.keyPasswordKey (not $auth.existingSecret) }}
{{- fail "kafkaAuth.tls.keyPasswordKey is set but kafkaAuth.existingSecret is empty: name the Secret that holds the key's password" }}
{{- end }}
{{- end }}

{{/*
The librdkafka settings that kafkaAuth implies, as a dict.
*/}}
{{- define "driftstream.kafkaAuthExtra" -}}
{{- $auth := .Values.kafkaAuth }}
{{- $extra := dict }}
{{- if and $auth.sasl.enabled $auth.tls.enabled }}
{{- $_ := set $extra "security.protocol" "SASL_SSL" }}
{{- else if $auth.sasl.enabled }}
{{- $_ := set $extra "security.protocol" "SASL_PLAINTEXT" }}
{{- else if $auth.tls.enabled }}
{{- $_ := set $extra "security.protocol" "SSL" }}
{{- end }}
{{- if $auth.sasl.enabled }}
{{- $_ := set $extra "sasl.mechanism" $auth.sasl.mechanism }}
{{- end }}
{{- if $auth.tls.enabled }}
{{- $dir := include "driftstream.tlsMountPath" . }}
{{- if $auth.tls.caKey }}
{{- $_ := set $extra "ssl.ca.location" (printf "%s/ca.crt" $dir) }}
{{- end }}
{{- if $auth.tls.certKey }}
{{- $_ := set $extra "ssl.certificate.location" (printf "%s/tls.crt" $dir) }}
{{- $_ := set $extra "ssl.key.location" (printf "%s/tls.key" $dir) }}
{{- end }}
{{- end }}
{{- toYaml $extra }}
{{- end }}

{{/*
driftstream's config.yaml: .Values.config with the settings kafkaAuth
implies added under kafka.extra (a key the user set in config wins).
*/}}
{{- define "driftstream.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $kafka := get $config "kafka" | default dict }}
{{- $extra := get $kafka "extra" | default dict }}
{{- $extra = merge $extra (include "driftstream.kafkaAuthExtra" . | fromYaml) }}
{{- if $extra }}
{{- $_ := set $kafka "extra" $extra }}
{{- end }}
{{- if $kafka }}
{{- $_ := set $config "kafka" $kafka }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
Environment variables carrying the SASL credentials and the key password.
driftstream parses an override's value as YAML, which would turn a password
such as `yes` into a boolean or cut `a #b` at the `#`; so each secret is first
read into a variable of its own, then passed on single-quoted through
Kubernetes' $(VAR) expansion: YAML reads a single-quoted scalar verbatim.
*/}}
{{- define "driftstream.kafkaAuthEnv" -}}
{{- $auth := .Values.kafkaAuth }}
{{- $secrets := list }}
{{- if $auth.sasl.enabled }}
{{- $secrets = append $secrets (list "KAFKA_SASL_USERNAME" $auth.existingSecret $auth.sasl.usernameKey "SASL.USERNAME") }}
{{- $secrets = append $secrets (list "KAFKA_SASL_PASSWORD" $auth.existingSecret $auth.sasl.passwordKey "SASL.PASSWORD") }}
{{- end }}
{{- if and $auth.tls.enabled $auth.tls.keyPasswordKey }}
{{- $secrets = append $secrets (list "KAFKA_SSL_KEY_PASSWORD" $auth.existingSecret $auth.tls.keyPasswordKey "SSL.KEY.PASSWORD") }}
{{- end }}
{{- range $secrets }}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ index . 1 }}
      key: {{ index . 2 }}
{{- end }}
{{- range $secrets }}
- name: DRIFTSTREAM__KAFKA__EXTRA__{{ index . 3 }}
  value: "'$({{ index . 0 }})'"
{{- end }}
{{- end }}
