{{/*
Chart name, for the app.kubernetes.io/name label.
*/}}
{{- define "inference-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
InferenceService name. Unlike most charts it defaults to the bare release name: the
release is the model, and the name is part of the model's URL and API path
(/v1/models/<name>:predict), so `helm install sklearn-iris` must serve `sklearn-iris`.
A nameOverride gives the usual "<release>-<nameOverride>".
*/}}
{{- define "inference-service.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if .Values.nameOverride }}
{{- printf "%s-%s" .Release.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Namespace of the InferenceService.
*/}}
{{- define "inference-service.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/*
Selector labels: identify this release's predictor pods.
*/}}
{{- define "inference-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inference-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The chart's own labels: the recommended app.kubernetes.io/* set without the two that carry a
version (helm.sh/chart, app.kubernetes.io/version). KServe copies an InferenceService's labels
into its revisions: a label that changes with the chart would roll every model at each chart
version (with Flux's reconcileStrategy Revision, at each commit), and, since KServe reports the
Knative Service's observedGeneration as the InferenceService's, leave it one generation ahead
for good, which kstatus (Flux's health checks) reads as never done.
*/}}
{{- define "inference-service.chartLabels" -}}
{{ include "inference-service.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels of the InferenceService: the chart's own labels, `labels` and commonLabels. Where keys
collide the chart's labels win, then the more specific `labels` over commonLabels.
*/}}
{{- define "inference-service.labels" -}}
{{- $own := include "inference-service.chartLabels" . | fromYaml }}
{{- toYaml (merge $own .Values.labels .Values.commonLabels) }}
{{- end }}

{{/*
Labels of the predictor pods: selector labels, predictor.labels, commonLabels.
*/}}
{{- define "inference-service.podLabels" -}}
{{- $labels := include "inference-service.selectorLabels" . | fromYaml }}
{{- toYaml (merge $labels .Values.predictor.labels .Values.commonLabels) }}
{{- end }}

{{/*
Pod scheduling fields of a predictor (KServe inlines the PodSpec into spec.predictor), only
those set: an unset field stays out of the pod spec Knative validates.
*/}}
{{- define "inference-service.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The serving.kserve.io/deploymentMode value KServe v0.20 expects for our friendly
deploymentMode (v0.16 renamed Serverless to Knative and RawDeployment to Standard).
*/}}
{{- define "inference-service.deploymentMode" -}}
{{- get (dict "knative" "Knative" "standard" "Standard") .Values.deploymentMode }}
{{- end }}

{{/*
Rules values.schema.json cannot express (they compare fields). Each failure names the values
involved, so `helm template`/`helm install` stops with a message saying what to change.
*/}}
{{- define "inference-service.validate" -}}
{{- $p := .Values.predictor }}
{{- $name := include "inference-service.fullname" . }}
{{- if gt (int $p.minReplicas) (int $p.maxReplicas) }}
{{- fail (printf "predictor.minReplicas (%d) must be <= predictor.maxReplicas (%d)" (int $p.minReplicas) (int $p.maxReplicas)) }}
{{- end }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "InferenceService name %q (release name or fullnameOverride) must start with a letter and contain only lowercase letters, digits and '-'" $name) }}
{{- end }}
{{- if gt (len $name) 47 }}
{{- fail (printf "InferenceService name %q is %d characters; at most 47 fit KServe's generated names (<name>-predictor-00001 must fit in 63): set fullnameOverride" $name (len $name)) }}
{{- end }}
{{- if eq .Values.deploymentMode "standard" }}
{{- if eq (int $p.minReplicas) 0 }}
{{- fail "predictor.minReplicas 0 (scale to zero) needs deploymentMode knative: in standard mode KServe's HPA keeps at least 1 replica" }}
{{- end }}
{{- if not (kindIs "invalid" $p.canaryTrafficPercent) }}
{{- fail "predictor.canaryTrafficPercent needs deploymentMode knative: it splits traffic between Knative revisions; in standard mode set canary (KServe v0.20 spec.canary)" }}
{{- end }}
{{- if .Values.tagRouting }}
{{- fail "tagRouting needs deploymentMode knative: tags name Knative revisions; in standard mode call the canary's own <name>-<canary.name>-predictor service" }}
{{- end }}
{{- with .Values.canary }}
{{- if .storageUri }}
{{- if not .name }}
{{- fail "canary.name is required with canary.storageUri: KServe names the canary Deployment <name>-<canary.name>-predictor" }}
{{- end }}
{{- if eq .name $p.name }}
{{- fail (printf "canary.name %q must differ from predictor.name" .name) }}
{{- end }}
{{- if and (not (kindIs "invalid" .minReplicas)) (gt (int .minReplicas) (int $p.minReplicas)) }}
{{- fail (printf "canary.minReplicas (%d) must be <= predictor.minReplicas (%d): KServe takes the canary's replicas from the stable's" (int .minReplicas) (int $p.minReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- else }}
{{- if .Values.canary.storageUri }}
{{- fail "canary needs deploymentMode standard (KServe v0.20 spec.canary); in knative mode set predictor.canaryTrafficPercent together with a new model.storageUri" }}
{{- end }}
{{- if $p.name }}
{{- fail "predictor.name needs deploymentMode standard: it names the stable Deployment for canary promotion" }}
{{- end }}
{{- end }}
{{- if hasKey .Values.annotations "serving.kserve.io/enable-tag-routing" }}
{{- fail "annotations must not set serving.kserve.io/enable-tag-routing: use the tagRouting value" }}
{{- end }}
{{- if hasKey .Values.annotations "serving.kserve.io/deploymentMode" }}
{{- fail "annotations must not set serving.kserve.io/deploymentMode: use the deploymentMode value (knative or standard)" }}
{{- end }}
{{- $seen := dict }}
{{- range .Values.model.env }}
{{- if hasKey $seen .name }}
{{- fail (printf "model.env lists %q twice: environment variable names must be unique" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- end }}

{{/*
Readiness probe of the model server container: the model's own readiness endpoint, which the
KServe and MLServer runtimes answer with 200 only once the model is loaded, on the HTTP port
KServe's serving runtimes declare (8080; Knative requires the probe's port to be the container's).
*/}}
{{- define "inference-service.readinessProbe" -}}
{{- $name := include "inference-service.fullname" . -}}
httpGet:
  {{- if eq .Values.model.protocolVersion "v2" }}
  path: /v2/models/{{ $name }}/ready
  {{- else }}
  path: /v1/models/{{ $name }}
  {{- end }}
  port: 8080
{{- end }}
