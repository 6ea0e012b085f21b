package configs_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
)

// kustomization is the part of kustomize's Kustomization these manifests use; decoding
// is strict, so a key outside it fails the test.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
	Patches []struct {
		Path   string `json:"path"`
		Target struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"target"`
	} `json:"patches,omitempty"`
}

// manifests is every object under kubernetes/, decoded strictly into its k8s.io/api type.
type manifests struct {
	deployments     map[string]*appsv1.Deployment // by file, patches included
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	pvcs            []*corev1.PersistentVolumeClaim
	namespaces      []*corev1.Namespace
	networkPolicies []*networkingv1.NetworkPolicy
	runtimeClasses  []*nodev1.RuntimeClass
	kustomizations  map[string]*kustomization // by directory
}

// strictUnmarshal decodes YAML as the API server does with fieldValidation=Strict: field
// names match case-sensitively, and unknown or duplicate fields are errors.
func strictUnmarshal(data []byte, into any) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(js, into)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func decodeStrict(t *testing.T, file string, data []byte, into any) {
	t.Helper()
	if err := strictUnmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{deployments: map[string]*appsv1.Deployment{}, kustomizations: map[string]*kustomization{}}
	err := filepath.WalkDir("kubernetes", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if filepath.Ext(path) != ".yaml" {
			return fmt.Errorf("%s: not a .yaml manifest", path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte("\n---")) {
			return fmt.Errorf("%s: one object per file", path)
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(data, &tm); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			var o appsv1.Deployment
			decodeStrict(t, path, data, &o)
			m.deployments[path] = &o
		case "v1 Service":
			var o corev1.Service
			decodeStrict(t, path, data, &o)
			m.services = append(m.services, &o)
		case "v1 ConfigMap":
			var o corev1.ConfigMap
			decodeStrict(t, path, data, &o)
			m.configMaps = append(m.configMaps, &o)
		case "v1 PersistentVolumeClaim":
			var o corev1.PersistentVolumeClaim
			decodeStrict(t, path, data, &o)
			m.pvcs = append(m.pvcs, &o)
		case "v1 Namespace":
			var o corev1.Namespace
			decodeStrict(t, path, data, &o)
			m.namespaces = append(m.namespaces, &o)
		case "networking.k8s.io/v1 NetworkPolicy":
			var o networkingv1.NetworkPolicy
			decodeStrict(t, path, data, &o)
			m.networkPolicies = append(m.networkPolicies, &o)
		case "node.k8s.io/v1 RuntimeClass":
			var o nodev1.RuntimeClass
			decodeStrict(t, path, data, &o)
			m.runtimeClasses = append(m.runtimeClasses, &o)
		case "kustomize.config.k8s.io/v1beta1 Kustomization":
			if filepath.Base(path) != "kustomization.yaml" {
				return fmt.Errorf("%s: a Kustomization must be named kustomization.yaml", path)
			}
			var o kustomization
			decodeStrict(t, path, data, &o)
			m.kustomizations[filepath.Dir(path)] = &o
		default:
			return fmt.Errorf("%s: unexpected object %s %s (add it to this test)", path, tm.APIVersion, tm.Kind)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// one returns the single element of s, failing the test otherwise.
func one[T any](t *testing.T, what string, s []T) T {
	t.Helper()
	if len(s) != 1 {
		t.Fatalf("want exactly one %s, have %d", what, len(s))
	}
	return s[0]
}

func TestKubernetesKustomizationsListEveryManifest(t *testing.T) {
	m := loadManifests(t)
	if len(m.kustomizations) != 2 {
		t.Fatalf("want the base and the gvisor kustomizations, have %d", len(m.kustomizations))
	}
	used := map[string]bool{}
	for dir, k := range m.kustomizations {
		used[filepath.Join(dir, "kustomization.yaml")] = true
		for _, r := range append(slices.Clone(k.Resources), patchPaths(k)...) {
			p := filepath.Join(dir, r)
			st, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s: %s: %v", dir, r, err)
				continue
			}
			if st.IsDir() {
				if _, ok := m.kustomizations[p]; !ok {
					t.Errorf("%s: resource %s is a directory without a kustomization", dir, r)
				}
				continue
			}
			used[p] = true
		}
	}
	_ = filepath.WalkDir("kubernetes", func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !used[path] {
			t.Errorf("%s is in no kustomization", path)
		}
		return nil
	})
}

func patchPaths(k *kustomization) []string {
	var out []string
	for _, p := range k.Patches {
		out = append(out, p.Path)
	}
	return out
}

// container is the symbi container of the base Deployment.
func baseDeployment(t *testing.T, m *manifests) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	d, ok := m.deployments[filepath.Join("kubernetes", "deployment.yaml")]
	if !ok {
		t.Fatal("no kubernetes/deployment.yaml")
	}
	c := one(t, "container", d.Spec.Template.Spec.Containers)
	return d, &c
}

// symbiConfig parses the ConfigMap's symbi.toml with symbi's own validation, the
// environment being what the Deployment gives the container (a Secret's value is a
// stand-in of the right length).
func symbiConfig(t *testing.T, m *manifests, c *corev1.Container) *config.Config {
	t.Helper()
	cm := one(t, "ConfigMap", m.configMaps)
	src, ok := cm.Data["symbi.toml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no symbi.toml", cm.Name)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = strings.Repeat("s", 32)
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		}
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := config.Parse("/etc/symbi/symbi.toml", []byte(src), lookup)
	if err != nil {
		t.Fatalf("the ConfigMap's symbi.toml does not validate with the container's environment: %v", err)
	}
	return cfg
}

func port(t *testing.T, hostport string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return int32(n)
}

func containerPort(c *corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func TestKubernetesDeploymentMatchesConfig(t *testing.T) {
	m := loadManifests(t)
	d, c := baseDeployment(t, m)
	cfg := symbiConfig(t, m, c)
	pod := d.Spec.Template.Spec

	// Non-root, read-only, nothing extra.
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("pod securityContext: want runAsNonRoot and a non-zero runAsUser")
	}
	if psc != nil && (psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
		t.Error("pod securityContext: want seccompProfile RuntimeDefault")
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("container has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("container: want readOnlyRootFilesystem")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("container: want allowPrivilegeEscalation false")
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
		t.Error("container: want capabilities drop ALL")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("symbi needs no Kubernetes API token: want automountServiceAccountToken false")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("container: want cpu and memory requests and a memory limit")
	}

	// The configuration the container reads is the ConfigMap.
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("args %q: want --config FILE", c.Args)
	}
	cfgFile := c.Args[i+1]
	if c.Args[0] != "serve" {
		t.Errorf("args %q: want serve first", c.Args)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for name := range mounts {
		if _, ok := volumes[name]; !ok {
			t.Errorf("volumeMount %s: no such volume", name)
		}
	}
	mountOf := func(path string) (corev1.Volume, corev1.VolumeMount, bool) {
		for _, vm := range c.VolumeMounts {
			if path == vm.MountPath || strings.HasPrefix(path, vm.MountPath+"/") {
				return volumes[vm.Name], vm, true
			}
		}
		return corev1.Volume{}, corev1.VolumeMount{}, false
	}
	cm := one(t, "ConfigMap", m.configMaps)
	if v, vm, ok := mountOf(cfgFile); !ok || v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || filepath.Join(vm.MountPath, "symbi.toml") != cfgFile {
		t.Errorf("--config %s is not symbi.toml of ConfigMap %s", cfgFile, cm.Name)
	}
	// data_dir is a persistent volume; /tmp is writable.
	pvc := one(t, "PersistentVolumeClaim", m.pvcs)
	if v, vm, ok := mountOf(cfg.Server.DataDir); !ok || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name || vm.ReadOnly {
		t.Errorf("data_dir %s is not on a writable mount of PersistentVolumeClaim %s", cfg.Server.DataDir, pvc.Name)
	}
	if v, _, ok := mountOf("/tmp"); !ok || v.EmptyDir == nil {
		t.Error("/tmp: want an emptyDir (the root file system is read-only)")
	}
	if len(pvc.Spec.AccessModes) == 1 && pvc.Spec.AccessModes[0] == corev1.ReadWriteOnce &&
		(d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Replicas == nil || *d.Spec.Replicas != 1) {
		t.Error("a ReadWriteOnce data volume: want one replica and the Recreate strategy")
	}

	// Ports: listen and metrics_listen are the container ports named http and metrics.
	for name, addr := range map[string]string{"http": cfg.Server.Listen, "metrics": cfg.Server.MetricsListen} {
		cp, ok := containerPort(c, intstr.FromString(name))
		if !ok {
			t.Errorf("no container port %s", name)
			continue
		}
		if host, _, _ := net.SplitHostPort(addr); host != "0.0.0.0" && host != "" && host != "::" {
			t.Errorf("%s listens on %s: the kubelet and the Service cannot reach it", name, addr)
		}
		if cp.ContainerPort != port(t, addr) {
			t.Errorf("container port %s is %d, symbi listens on %s", name, cp.ContainerPort, addr)
		}
	}
	if ann := d.Spec.Template.Annotations["prometheus.io/port"]; ann != strconv.Itoa(int(port(t, cfg.Server.MetricsListen))) {
		t.Errorf("prometheus.io/port %q, metrics_listen %s", ann, cfg.Server.MetricsListen)
	}

	// Probes: on the main listener, the paths symbi serves without a token.
	probes := map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe}
	wantPath := map[string]string{"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}
	h := gatewayHandler(t, cfg)
	for kind, p := range probes {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want an httpGet probe", kind)
			continue
		}
		if p.HTTPGet.Path != wantPath[kind] {
			t.Errorf("%s probe on %s, want %s", kind, p.HTTPGet.Path, wantPath[kind])
		}
		if cp, ok := containerPort(c, p.HTTPGet.Port); !ok || cp.ContainerPort != port(t, cfg.Server.Listen) {
			t.Errorf("%s probe port %s is not server.listen %s", kind, p.HTTPGet.Port.String(), cfg.Server.Listen)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://10.1.2.3:8080"+p.HTTPGet.Path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s probe: symbi answers GET %s without a token with %d %q", kind, p.HTTPGet.Path, rec.Code, rec.Body.String())
		}
	}

	// Every env: value of the configuration is set in the container.
	src := one(t, "ConfigMap", m.configMaps).Data["symbi.toml"]
	for _, match := range regexp.MustCompile(`(?m)^[^#\n]*"env:([A-Za-z_][A-Za-z0-9_]*)"`).FindAllStringSubmatch(src, -1) {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == match[1] }) {
			t.Errorf("symbi.toml reads env:%s; the container does not set it", match[1])
		}
	}
}

// gatewayHandler is the HTTP handler symbi serves for cfg (no upstreams, its tokens).
func gatewayHandler(t *testing.T, cfg *config.Config) http.Handler {
	t.Helper()
	tokens := map[string]string{}
	for _, tk := range cfg.Server.Tokens {
		tokens[tk.Token] = tk.Identity
	}
	g := gateway.New(&gateway.Options{Tokens: tokens})
	t.Cleanup(func() { g.Close() })
	return g.Handler(&gateway.HTTPOptions{NoMetrics: cfg.Server.MetricsListen != ""})
}

func TestKubernetesServiceAndNetworkPolicySelectThePod(t *testing.T) {
	m := loadManifests(t)
	d, c := baseDeployment(t, m)
	podLabels := d.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		if len(sel) == 0 {
			return false
		}
		for k, v := range sel {
			if podLabels[k] != v {
				return false
			}
		}
		return true
	}
	if !matches(d.Spec.Selector.MatchLabels) {
		t.Errorf("Deployment selector %v does not select its pods %v", d.Spec.Selector.MatchLabels, podLabels)
	}
	svc := one(t, "Service", m.services)
	if !matches(svc.Spec.Selector) {
		t.Errorf("Service selector %v does not select the pods %v", svc.Spec.Selector, podLabels)
	}
	for _, sp := range svc.Spec.Ports {
		if _, ok := containerPort(c, sp.TargetPort); !ok {
			t.Errorf("Service port %s: targetPort %s is no container port", sp.Name, sp.TargetPort.String())
		}
	}
	np := one(t, "NetworkPolicy", m.networkPolicies)
	if !matches(np.Spec.PodSelector.MatchLabels) {
		t.Errorf("NetworkPolicy selector %v does not select the pods", np.Spec.PodSelector.MatchLabels)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("NetworkPolicy policyTypes %v: want Ingress and Egress", np.Spec.PolicyTypes)
	}
	covered := map[string]bool{}
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port == nil {
				t.Error("NetworkPolicy ingress rule without a port")
				continue
			}
			cp, ok := containerPort(c, *p.Port)
			if !ok {
				t.Errorf("NetworkPolicy ingress port %s is no container port", p.Port.String())
			}
			covered[cp.Name] = true
		}
	}
	for _, cp := range c.Ports {
		if !covered[cp.Name] {
			t.Errorf("container port %s: no NetworkPolicy ingress rule admits anyone to it", cp.Name)
		}
	}
	ns := one(t, "Namespace", m.namespaces)
	if k := m.kustomizations["kubernetes"]; k == nil || k.Namespace != ns.Name {
		t.Errorf("the base kustomization should put everything in namespace %s", ns.Name)
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Error("namespace: want the restricted Pod Security Standard enforced (the pod meets it)")
	}
}

func TestKubernetesGVisorOverlay(t *testing.T) {
	m := loadManifests(t)
	rc := one(t, "RuntimeClass", m.runtimeClasses)
	if rc.Handler != "runsc" {
		t.Errorf("RuntimeClass %s: handler %q, want runsc (gVisor)", rc.Name, rc.Handler)
	}
	patch, ok := m.deployments[filepath.Join("kubernetes", "gvisor", "deployment-patch.yaml")]
	if !ok {
		t.Fatal("no gvisor/deployment-patch.yaml")
	}
	if rcn := patch.Spec.Template.Spec.RuntimeClassName; rcn == nil || *rcn != rc.Name {
		t.Errorf("the gvisor patch sets runtimeClassName %v, want %s", rcn, rc.Name)
	}
	d, _ := baseDeployment(t, m)
	if d.Spec.Template.Spec.RuntimeClassName != nil {
		t.Error("the base Deployment should run on the default runtime; gvisor/ sets the RuntimeClass")
	}
	k := m.kustomizations[filepath.Join("kubernetes", "gvisor")]
	if k == nil || len(k.Patches) != 1 || k.Patches[0].Target.Kind != "Deployment" || k.Patches[0].Target.Name != d.Name || patch.Name != d.Name {
		t.Errorf("gvisor kustomization: want one patch of Deployment %s", d.Name)
	}
}

// TestKubernetesStrictDecodingRefusesUnknownFields keeps the other tests honest: the
// decoding they rely on refuses a misspelt field.
func TestKubernetesStrictDecodingRefusesUnknownFields(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("kubernetes", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to string }{
		{"readOnlyRootFilesystem:", "readOnlyRootFileSystem:"}, // only the case differs
		{"readOnlyRootFilesystem:", "readOnlyRootFS:"},
		{"      containers:", "      runtimeClass: gvisor\n      containers:"},
	} {
		bad := bytes.Replace(data, []byte(tc.from), []byte(tc.to), 1)
		if bytes.Equal(bad, data) {
			t.Fatalf("deployment.yaml has no %q", tc.from)
		}
		var d appsv1.Deployment
		if err := strictUnmarshal(bad, &d); err == nil {
			t.Errorf("%q for %q: strict decoding accepted it", tc.to, tc.from)
		}
	}
}
