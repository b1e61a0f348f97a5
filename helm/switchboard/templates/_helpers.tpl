{{/* Chart name, truncated for use in resource names. */}}
{{- define "switchboard.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped base name; a service's resources are "<fullname>-<service>". */}}
{{- define "switchboard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one service; call with (dict "root" $ "name" "api"). */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "switchboard.secretName" -}}
{{- default (printf "%s-secrets" (include "switchboard.fullname" .)) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The secret environment of one service, as secretKeyRef entries: each secret reaches only
the pods that use it. Call with (dict "root" $ "name" "api"). Rows: variable, key in the
chart's Secret, services, optional.
*/}}
{{- define "switchboard.secretEnv" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $s := $root.Values.secret -}}
{{- $p := $s.providers -}}
{{- $all := list "api" "ingress" "stream" "router" "deliverer" "sync" -}}
{{- $rows := list
  (list "SWITCHBOARD_SECRET_KEY" $s.secretKeyKey $all false)
  (list "SWITCHBOARD_SECRET_KEYS" $s.secretKeysKey $all true)
  (list "SWITCHBOARD_ADMIN_TOKEN" $s.adminTokenKey (list "api" "stream") false)
  (list "SWITCHBOARD_METRICS_TOKEN" $s.metricsTokenKey $all true)
  (list "SWITCHBOARD_META_APP_SECRET" $p.metaAppSecretKey (list "api" "ingress" "deliverer") true)
  (list "SWITCHBOARD_META_VERIFY_TOKEN" $p.metaVerifyTokenKey (list "ingress") true)
  (list "SWITCHBOARD_SLACK_SIGNING_SECRET" $p.slackSigningSecretKey (list "ingress") true)
  (list "SWITCHBOARD_SLACK_CLIENT_SECRET" $p.slackClientSecretKey (list "api") true)
-}}
{{- if hasPrefix "SASL_" $root.Values.kafka.securityProtocol -}}
{{- $rows = append $rows (list "SWITCHBOARD_KAFKA_SASL_PASSWORD" $root.Values.kafka.sasl.passwordKey $all false) -}}
{{- end -}}
{{- range $row := $rows }}
{{- if has $name (index $row 2) }}
- name: {{ index $row 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" $root }}
      key: {{ index $row 1 }}
      {{- if index $row 3 }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Kafka connection settings (not secret), for every service. */}}
{{- define "switchboard.kafkaEnv" -}}
{{- $k := .Values.kafka -}}
{{- $protocols := list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL" -}}
{{- if not (has $k.securityProtocol $protocols) -}}
{{- fail (printf "kafka.securityProtocol must be one of %s" (join ", " $protocols)) -}}
{{- end -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required" $k.bootstrapServers | quote }}
- name: SWITCHBOARD_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
- name: SWITCHBOARD_TOPIC_REPLICATION_FACTOR
  value: {{ $k.replicationFactor | quote }}
- name: SWITCHBOARD_TOPIC_MIN_INSYNC_REPLICAS
  value: {{ $k.minInsyncReplicas | quote }}
- name: SWITCHBOARD_TOPIC_CHECK
  value: {{ $k.topicCheck | quote }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: SWITCHBOARD_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: SWITCHBOARD_KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with SASL" $k.sasl.username | quote }}
{{- end }}
{{- if and (hasSuffix "SSL" $k.securityProtocol) $k.tls.existingSecret }}
- name: SWITCHBOARD_KAFKA_SSL_CA_FILE
  value: {{ printf "/etc/switchboard/kafka-tls/%s" $k.tls.caKey | quote }}
{{- if $k.tls.clientCert }}
- name: SWITCHBOARD_KAFKA_SSL_CERT_FILE
  value: {{ printf "/etc/switchboard/kafka-tls/%s" $k.tls.certKey | quote }}
- name: SWITCHBOARD_KAFKA_SSL_KEY_FILE
  value: {{ printf "/etc/switchboard/kafka-tls/%s" $k.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Plain settings must not carry secrets: refuse names that look secret. */}}
{{- define "switchboard.plainEnv" -}}
{{- range $key, $value := . }}
{{- if regexMatch "(?i)(SECRET|PASSWORD|TOKEN)" $key }}
{{- fail (printf "%s looks secret: put it in the chart's Secret (see secret.providers), not in a plain value" $key) }}
{{- end }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
