{{- define "dnsflow.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "dnsflow.labels" -}}
app.kubernetes.io/part-of: dnsflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "dnsflow.secretName" -}}
{{ .Values.existingSecret | default "dnsflow" }}
{{- end }}

{{/* Pod-level security context of every non-root pod (the image's user). */}}
{{- define "dnsflow.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
fsGroup: {{ .Values.runAsGroup }}
seccompProfile: {type: RuntimeDefault}
{{- end }}

{{/* Container security context of the pipeline containers: nothing at all. */}}
{{- define "dnsflow.containerSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end }}
