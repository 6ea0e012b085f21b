package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLoadResolvesPathsAgainstTheFile: relative paths in a configuration file, and the
// default data_dir, are relative to the file, not to the working directory (an IDE that
// starts `symbi mcp` from "/" used to get a fresh /symbi-data).
func TestLoadResolvesPathsAgainstTheFile(t *testing.T) {
	dir := t.TempDir()
	cfgDir := filepath.Join(dir, "etc")
	if err := os.Mkdir(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfgDir, "symbi.toml")
	in := `version = 1
[server]
data_dir = "state"
tls_cert = "tls/cert.pem"
tls_key = "./tls/key.pem"
tls_client_ca = "/etc/ca.pem"
[[upstreams]]
name = "local"
command = ["./bin/server", "--flag"]
dir = "work"
schemapin = { domain = "d.example", discovery_file = "keys/wk.json", bundle_file = "../bundle.json", manifest = "m.json" }
[[upstreams]]
name = "boxed"
command = ["./in-image"]
dir = "/app"
sandbox = { tier = "docker", image = "x:1", mounts = ["./data:/data:rw", "/abs:/abs", "../up:/up"] }
schemapin = { manifest = "https://example.com/m.json" }
[[upstreams]]
name = "path"
command = ["npx", "server"]
[policy]
dir = "policies"
[audit]
dir = "../audit"
`
	if err := os.WriteFile(path, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	// Start from elsewhere, as an IDE does.
	t.Chdir(t.TempDir())
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	at := func(p string) string { return filepath.Join(cfgDir, p) }
	got := map[string]any{
		"data_dir": c.Server.DataDir, "tls_cert": c.Server.TLSCert, "tls_key": c.Server.TLSKey, "tls_client_ca": c.Server.TLSClientCA,
		"policy.dir": c.Policy.Dir, "audit.dir": c.Audit.Dir,
		"local.command": c.Upstreams[0].Command, "local.dir": c.Upstreams[0].Dir,
		"local.discovery_file": c.Upstreams[0].SchemaPin.DiscoveryFile, "local.bundle_file": c.Upstreams[0].SchemaPin.BundleFile,
		"local.manifest": c.Upstreams[0].SchemaPin.Manifest,
		"boxed.command":  c.Upstreams[1].Command, "boxed.dir": c.Upstreams[1].Dir, "boxed.mounts": c.Upstreams[1].Sandbox.Mounts,
		"boxed.manifest": c.Upstreams[1].SchemaPin.Manifest,
		"path.command":   c.Upstreams[2].Command,
	}
	want := map[string]any{
		"data_dir": at("state"), "tls_cert": at("tls/cert.pem"), "tls_key": at("tls/key.pem"), "tls_client_ca": "/etc/ca.pem",
		"policy.dir": at("policies"), "audit.dir": filepath.Join(dir, "audit"),
		"local.command": []string{at("bin/server"), "--flag"}, "local.dir": at("work"),
		"local.discovery_file": at("keys/wk.json"), "local.bundle_file": filepath.Join(dir, "bundle.json"),
		"local.manifest": at("m.json"),
		// Inside the container: left alone; the mounts' host side is resolved.
		"boxed.command": []string{"./in-image"}, "boxed.dir": "/app",
		"boxed.mounts":   []string{at("data") + ":/data:rw", "/abs:/abs", filepath.Join(dir, "up") + ":/up"},
		"boxed.manifest": "https://example.com/m.json",
		"path.command":   []string{"npx", "server"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resolved paths (-want +got):\n%s", diff)
	}
}

// TestLoadDefaultDataDirBesideTheFile: with no data_dir, the default ./symbi-data is
// beside the configuration file too.
func TestLoadDefaultDataDirBesideTheFile(t *testing.T) {
	cfgDir := t.TempDir()
	path := filepath.Join(cfgDir, "symbi.toml")
	if err := os.WriteFile(path, []byte("version = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cfgDir, "symbi-data"); c.Server.DataDir != want {
		t.Errorf("data_dir = %q, want %q (beside the file)", c.Server.DataDir, want)
	}
	// A relative config path given on the command line works the same.
	t.Chdir(cfgDir)
	if c, err = Load("symbi.toml"); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cfgDir, "symbi-data"); c.Server.DataDir != want {
		t.Errorf("Load(relative path): data_dir = %q, want %q", c.Server.DataDir, want)
	}
	// Without a file, the working directory is the base, as before.
	if d := Default().Server.DataDir; d != DefaultDataDir {
		t.Errorf("Default().Server.DataDir = %q, want %q", d, DefaultDataDir)
	}
}

func TestRelativeMountNeedsDotSlash(t *testing.T) {
	got := problems(t, "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nsandbox = { tier = \"docker\", image = \"i\", mounts = [\"data:/data\"] }\n", nil)
	if len(got) != 1 || got[0].Key != "upstreams[0].sandbox.mounts[0]" || !strings.Contains(got[0].Msg, "start with ./ or ../") {
		t.Errorf("problems = %v, want one for upstreams[0].sandbox.mounts[0] saying how to write a relative host path", got)
	}
}

// TestResolvePathsCoversEveryPathKey guards ResolvePaths against a new key that names a
// host file or directory (by its name: *dir, *file, tls_*, manifest, *_path) and is not
// resolved: every such string field is set to a relative value and must come out absolute.
func TestResolvePathsCoversEveryPathKey(t *testing.T) {
	pathKey := func(tag string) bool {
		return tag == "dir" || strings.HasSuffix(tag, "_dir") || strings.HasSuffix(tag, "_file") || strings.HasSuffix(tag, "_path") ||
			strings.HasPrefix(tag, "tls_") || tag == "manifest"
	}
	c := &Config{Upstreams: []Upstream{{SchemaPin: &SchemaPin{}, Sandbox: &UpstreamSandbox{Tier: "none"}}}}
	var set func(v reflect.Value, key string, keys *[]string)
	set = func(v reflect.Value, key string, keys *[]string) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				set(v.Elem(), key, keys)
			}
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.Struct {
				for i := range v.Len() {
					set(v.Index(i), key, keys)
				}
			}
		case reflect.Struct:
			for i := range v.NumField() {
				f := v.Type().Field(i)
				tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
				if f.Type.Kind() == reflect.String && pathKey(tag) {
					v.Field(i).SetString("rel/" + tag)
					*keys = append(*keys, key+tag)
					continue
				}
				set(v.Field(i), key+tag+".", keys)
			}
		}
	}
	var keys []string
	set(reflect.ValueOf(c).Elem(), "", &keys)
	if len(keys) < 8 {
		t.Fatalf("found only %d path keys (%v); did the heuristic break?", len(keys), keys)
	}
	c.ResolvePaths("/base")
	var check func(v reflect.Value, key string)
	check = func(v reflect.Value, key string) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				check(v.Elem(), key)
			}
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.Struct {
				for i := range v.Len() {
					check(v.Index(i), key)
				}
			}
		case reflect.Struct:
			for i := range v.NumField() {
				f := v.Type().Field(i)
				tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
				if f.Type.Kind() == reflect.String && pathKey(tag) {
					if s := v.Field(i).String(); !filepath.IsAbs(s) {
						t.Errorf("%s%s = %q after ResolvePaths: a host path key that is not resolved against the configuration file", key, tag, s)
					}
					continue
				}
				check(v.Field(i), key+tag+".")
			}
		}
	}
	check(reflect.ValueOf(c).Elem(), "")
}

// TestIngestRootsRelativeToConfig: a relative [context] ingest_roots entry names a
// directory beside the configuration file, like every other host path.
func TestIngestRootsRelativeToConfig(t *testing.T) {
	c, err := Parse("/etc/symbi/symbi.toml", []byte("version = 1\n[context]\ningest_roots = [\"./docs\", \"/srv/kb\"]\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/etc/symbi/docs", "/srv/kb"}, c.Context.IngestRoots); diff != "" {
		t.Errorf("ingest_roots (-want +got):\n%s", diff)
	}
}
