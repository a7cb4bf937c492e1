// Package helm_test checks the Helm chart in token-orchestrator/ against the
// server it deploys: it renders the chart with helm template, with the
// default values and with every optional part turned on, and runs a real
// replica configured exactly as a pod of the chart would be.
package helm_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// chartDir is the chart, next to this file.
const chartDir = "token-orchestrator"

// helmBinary finds helm: $HELM (make test sets it to the helm that make
// tools/helm built), the clone's bin/tools/helm, or the PATH. Without one the test is skipped on a developer's
// machine, and fails under CI, where make test installs it.
func helmBinary(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("HELM"), filepath.Join("..", "..", "bin", "tools", "helm")}
	if p, err := exec.LookPath("helm"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if info, err := os.Stat(c); err == nil && !info.IsDir() {
			abs, err := filepath.Abs(c)
			require.NoError(t, err)
			return abs
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("helm is missing, and CI is set: make test installs it with make tools/helm")
	}
	t.Skip("helm is not installed: run make tools/helm (or make test) to check the chart")
	return ""
}

// manifest is one rendered Kubernetes object.
type manifest = map[string]any

func kindOf(m manifest) string { return str(m["kind"]) }
func nameOf(m manifest) string { return str(get(m, "metadata", "name")) }

// render runs helm template on the chart with the given values files.
func render(t *testing.T, helm string, valuesFiles ...string) []manifest {
	t.Helper()
	// A helm built with go install assumes Kubernetes 1.20, below the
	// chart's kubeVersion.
	args := []string{"template", "orchestrator", chartDir, "--namespace", "keys", "--kube-version", "1.30.0"}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	cmd := exec.Command(helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "helm template: %s", stderr.String())
	var docs []manifest
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var m manifest
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if m != nil {
			docs = append(docs, m)
		}
	}
	return docs
}

// get walks nested maps by key.
func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func labels(v any) map[string]string {
	out := map[string]string{}
	if m, ok := v.(map[string]any); ok {
		for k, val := range m {
			out[k] = str(val)
		}
	}
	return out
}

// selects tells whether a label selector picks pods with these labels.
func selects(selector, podLabels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if podLabels[k] != v {
			return false
		}
	}
	return true
}

// one returns the only object of a kind, failing if there is not exactly one.
func one(t *testing.T, docs []manifest, kind string) manifest {
	t.Helper()
	var found []manifest
	for _, d := range docs {
		if kindOf(d) == kind {
			found = append(found, d)
		}
	}
	require.Len(t, found, 1, "objects of kind %s", kind)
	return found[0]
}

func find(docs []manifest, kind, name string) manifest {
	for _, d := range docs {
		if kindOf(d) == kind && nameOf(d) == name {
			return d
		}
	}
	return nil
}

// knownSettings is every environment variable the server's configuration
// reads, found by loading it with a getenv that records the names.
func knownSettings(t *testing.T) map[string]bool {
	known := map[string]bool{}
	_, err := config.Load(nil, func(name string) string { known[name] = true; return "" }, io.Discard)
	require.NoError(t, err)
	require.True(t, known["DATABASE_URL"] && known["ADMIN_TOKEN_FILE"], "the recorder sees the settings: %v", known)
	return known
}

// container is the server's container of the Deployment, with its env
// resolved against the rendered Secrets.
type container struct {
	spec    map[string]any
	env     map[string]string
	secrets map[string]string // env var -> "secret/key" for secretKeyRef
}

func serverContainer(t *testing.T, deployment manifest) container {
	t.Helper()
	containers := list(get(deployment, "spec", "template", "spec", "containers"))
	require.Len(t, containers, 1)
	c := container{spec: containers[0].(map[string]any), env: map[string]string{}, secrets: map[string]string{}}
	for _, e := range list(c.spec["env"]) {
		name := str(get(e, "name"))
		require.NotContains(t, c.env, name, "env %s set twice", name)
		if ref := get(e, "valueFrom", "secretKeyRef"); ref != nil {
			c.secrets[name] = str(get(ref, "name")) + "/" + str(get(ref, "key"))
			c.env[name] = ""
			continue
		}
		c.env[name] = str(get(e, "value"))
	}
	return c
}

// secretData decodes the data of the rendered Secrets, by "secret/key".
func secretData(t *testing.T, docs []manifest) map[string]string {
	out := map[string]string{}
	for _, d := range docs {
		if kindOf(d) != "Secret" {
			continue
		}
		for k, v := range get(d, "data").(map[string]any) {
			raw, err := base64.StdEncoding.DecodeString(str(v))
			require.NoError(t, err)
			out[nameOf(d)+"/"+k] = string(raw)
		}
	}
	return out
}

func seconds(t *testing.T, env map[string]string, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(env[name])
	require.NoError(t, err, "%s=%q", name, env[name])
	return d
}

func TestChart(t *testing.T) {
	t.Parallel()
	helm := helmBinary(t)
	known := knownSettings(t)

	for _, tc := range []struct {
		name   string
		values []string
	}{
		{"defaults", nil},
		{"all optional parts", []string{filepath.Join(chartDir, "ci", "all-on-values.yaml")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			docs := render(t, helm, tc.values...)
			allOn := tc.values != nil
			secrets := secretData(t, docs)
			if allOn {
				// The encryption keys come from a Secret of the operator's
				// own (encryption.existingSecret), never from the chart.
				secrets["token-orchestrator-encryption/secret-key"] = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
				secrets["token-orchestrator-encryption/old-keys"] = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)) + "\n"
			}
			deployment := one(t, docs, "Deployment")
			podSpec := get(deployment, "spec", "template", "spec")
			podLabels := labels(get(deployment, "spec", "template", "metadata", "labels"))
			require.True(t, selects(labels(get(deployment, "spec", "selector", "matchLabels")), podLabels),
				"the Deployment's selector picks its own pods")
			c := serverContainer(t, deployment)

			// Every setting the chart gives is one the server reads: a
			// misspelt name would be ignored in silence.
			for name := range c.env {
				require.True(t, known[name], "the chart sets %s, which the server does not read", name)
			}
			for name, ref := range c.secrets {
				require.Contains(t, secrets, ref, "%s comes from a Secret key the chart does not create", name)
			}

			// The port: ADDR, the container port and the probes agree.
			ports := list(c.spec["ports"])
			require.Len(t, ports, 1)
			containerPort := get(ports[0], "containerPort").(int)
			portName := str(get(ports[0], "name"))
			require.Equal(t, ":"+strconv.Itoa(containerPort), c.env["ADDR"])
			probes := map[string]string{}
			for _, probe := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
				httpGet := get(c.spec, probe, "httpGet")
				require.NotNil(t, httpGet, "%s is an HTTP probe", probe)
				port := str(get(httpGet, "port"))
				require.True(t, port == portName || port == strconv.Itoa(containerPort),
					"%s probes port %s, not the server's %d", probe, port, containerPort)
				probes[probe] = str(get(httpGet, "path"))
			}
			require.Equal(t, "/readyz", probes["readinessProbe"])
			require.Equal(t, "/healthz", probes["livenessProbe"])
			require.Empty(t, get(c.spec, "readinessProbe", "httpGet", "httpHeaders"), "probes send no token")

			// The Service reaches the pods on the same port.
			service := one(t, docs, "Service")
			require.True(t, selects(labels(get(service, "spec", "selector")), podLabels), "the Service selects the pods")
			servicePorts := list(get(service, "spec", "ports"))
			require.Len(t, servicePorts, 1)
			target := str(get(servicePorts[0], "targetPort"))
			require.True(t, target == portName || target == strconv.Itoa(containerPort))

			// Non-root, read-only, no capabilities, default seccomp.
			require.Equal(t, true, get(podSpec, "securityContext", "runAsNonRoot"))
			require.NotEqual(t, 0, get(podSpec, "securityContext", "runAsUser"))
			require.Equal(t, "RuntimeDefault", get(podSpec, "securityContext", "seccompProfile", "type"))
			require.Equal(t, true, get(c.spec, "securityContext", "runAsNonRoot"))
			require.Equal(t, true, get(c.spec, "securityContext", "readOnlyRootFilesystem"))
			require.Equal(t, false, get(c.spec, "securityContext", "allowPrivilegeEscalation"))
			require.Equal(t, []any{"ALL"}, get(c.spec, "securityContext", "capabilities", "drop"))
			require.NotNil(t, get(c.spec, "resources", "requests", "cpu"))
			require.NotNil(t, get(c.spec, "resources", "limits", "memory"))

			// The kubelet's SIGKILL comes after the whole shutdown.
			grace := time.Duration(get(podSpec, "terminationGracePeriodSeconds").(int)) * time.Second
			drain, shutdown := seconds(t, c.env, "DRAIN_DELAY"), seconds(t, c.env, "SHUTDOWN_TIMEOUT")
			require.Greater(t, grace, drain+shutdown, "the grace period covers DRAIN_DELAY and SHUTDOWN_TIMEOUT")
			require.Positive(t, drain, "a drain delay lets the endpoints be removed before the listener closes")
			require.Equal(t, "true", c.env["LEADER_ELECTION"])

			// The tokens come as files from the mounted Secret, never as
			// plain environment variables.
			require.NotContains(t, c.env, "ADMIN_TOKEN")
			require.NotContains(t, c.env, "CLIENT_TOKEN")
			tokenFiles := mountedSecretFiles(t, podSpec, c, secrets)
			require.Contains(t, tokenFiles, c.env["ADMIN_TOKEN_FILE"])
			require.Contains(t, tokenFiles, c.env["CLIENT_TOKEN_FILE"])
			if allOn {
				require.Contains(t, tokenFiles, c.env["SECRET_KEY_FILE"])
				require.Contains(t, tokenFiles, c.env["SECRET_KEYS_OLD_FILE"])
			} else {
				require.NotContains(t, c.env, "SECRET_KEY_FILE", "no encryption key unless the operator gives one")
			}

			pdb := one(t, docs, "PodDisruptionBudget")
			require.True(t, selects(labels(get(pdb, "spec", "selector", "matchLabels")), podLabels),
				"the PodDisruptionBudget selects the Deployment's pods")

			if allOn {
				hpa := one(t, docs, "HorizontalPodAutoscaler")
				require.Equal(t, "autoscaling/v2", get(hpa, "apiVersion"))
				require.Equal(t, "Deployment", get(hpa, "spec", "scaleTargetRef", "kind"))
				require.Equal(t, nameOf(deployment), get(hpa, "spec", "scaleTargetRef", "name"))
				require.Nil(t, get(deployment, "spec", "replicas"), "the autoscaler owns the replica count")
				require.Contains(t, c.env, "REPORT_DATABASE_URL")
				require.Equal(t, "127.0.0.1:6060", c.env["DEBUG_ADDR"], "the profiler stays on loopback")

				monitor := one(t, docs, "ServiceMonitor")
				require.Equal(t, "monitoring.coreos.com/v1", get(monitor, "apiVersion"))
				require.True(t, selects(labels(get(monitor, "spec", "selector", "matchLabels")), labels(get(service, "metadata", "labels"))),
					"the ServiceMonitor selects the Service")
				endpoints := list(get(monitor, "spec", "endpoints"))
				require.Len(t, endpoints, 1)
				require.Equal(t, str(get(servicePorts[0], "name")), str(get(endpoints[0], "port")))
				require.Equal(t, "/metrics", get(endpoints[0], "path"))
				require.Equal(t, "false", c.env["PUBLIC_METRICS"])
				cred := get(endpoints[0], "authorization", "credentials")
				ref := str(get(cred, "name")) + "/" + str(get(cred, "key"))
				require.Equal(t, "admin-token-0123456789abcdef", secrets[ref], "the ServiceMonitor sends the admin token")
			} else {
				for _, kind := range []string{"HorizontalPodAutoscaler", "ServiceMonitor"} {
					require.Nil(t, find(docs, kind, nameOf(deployment)), "%s is off by default", kind)
				}
				require.EqualValues(t, 2, get(deployment, "spec", "replicas"))
				require.NotContains(t, c.env, "REPORT_DATABASE_URL")
				require.NotContains(t, c.env, "DEBUG_ADDR")
			}

			runAsPod(t, c, tokenFiles, probes, allOn)
		})
	}
}

// mountedSecretFiles maps the paths of the files the server's container
// sees from Secret volumes to their rendered contents.
func mountedSecretFiles(t *testing.T, podSpec any, c container, secrets map[string]string) map[string]string {
	t.Helper()
	volumes := map[string]any{}
	for _, v := range list(get(podSpec, "volumes")) {
		volumes[str(get(v, "name"))] = v
	}
	files := map[string]string{}
	for _, m := range list(c.spec["volumeMounts"]) {
		secret := get(volumes[str(get(m, "name"))], "secret")
		if secret == nil {
			continue
		}
		require.Equal(t, true, get(m, "readOnly"), "secret volumes are read-only")
		name := str(get(secret, "secretName"))
		for _, item := range list(get(secret, "items")) {
			ref := name + "/" + str(get(item, "key"))
			require.Contains(t, secrets, ref, "the volume mounts a key the chart does not create")
			files[str(get(m, "mountPath"))+"/"+str(get(item, "path"))] = secrets[ref]
		}
	}
	return files
}

// runAsPod starts a real replica configured from the container's
// environment (the database URL aside: the test's own database) and asks
// it what the kubelet and Prometheus would.
func runAsPod(t *testing.T, c container, tokenFiles map[string]string, probes map[string]string, scrape bool) {
	t.Helper()
	// The token files, where the *_FILE settings point, under a temporary
	// directory.
	dir := t.TempDir()
	env := maps.Clone(c.env)
	for name, value := range env {
		if content, ok := tokenFiles[value]; ok {
			local := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(value, "/"), "/", "_"))
			require.NoError(t, os.WriteFile(local, []byte(content), 0o400))
			env[name] = local
		}
	}
	// The URLs come from Secrets and name hosts that do not exist here:
	// the test's database stands in below, for the standby too.
	for name := range c.secrets {
		env[name] = "postgres://placeholder/db"
	}
	cfg, err := config.Load(nil, func(name string) string { return env[name] }, io.Discard)
	require.NoError(t, err, "the server accepts the chart's settings")
	require.NotEmpty(t, cfg.AdminToken)
	require.NotEmpty(t, cfg.ClientToken)
	require.True(t, cfg.PublicHealth)
	_, encrypted := c.env["SECRET_KEY_FILE"]
	require.Equal(t, encrypted, cfg.Secrets != nil, "the server reads the mounted encryption keys")

	replica := servertest.Start(t, servertest.Options{Configure: func(got *config.Config) {
		db := got.DatabaseURL
		*got = cfg
		got.DatabaseURL = db
		if got.ReportDatabaseURL != "" {
			got.ReportDatabaseURL = db
		}
		// The test's own replica: no waiting at its end, and no
		// profiler on a fixed port that parallel tests would share.
		got.DrainDelay, got.ShutdownTimeout, got.DebugAddr = 0, 5*time.Second, ""
	}})

	call := func(path, token string) int {
		req, err := http.NewRequest(http.MethodGet, replica.URL+path, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// The probes send no token, and must be answered 200.
	for _, probe := range slices.Sorted(maps.Keys(probes)) {
		require.Equal(t, http.StatusOK, call(probes[probe], ""), "%s %s", probe, probes[probe])
	}
	// The tokens are in force: the API itself is closed without one.
	require.Equal(t, http.StatusUnauthorized, call("/stats", ""))
	require.Equal(t, http.StatusOK, call("/stats", cfg.AdminToken))
	if scrape {
		require.Equal(t, http.StatusUnauthorized, call("/metrics", ""), "metrics are not public")
		require.Equal(t, http.StatusOK, call("/metrics", cfg.AdminToken), "the ServiceMonitor's token is accepted")
	}
}
