// Package catalog reads symbi's built-in catalog of well-known MCP servers
// (configs/catalog.toml, embedded in the binary): what `symbi add NAME` runs for a name
// it knows, the environment the server needs, and the sandbox tier and policy notes
// suggested for it.
package catalog

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/symbi-dev/symbi/configs"
)

// Server is one catalog entry.
type Server struct {
	Name        string            `toml:"name"`
	Description string            `toml:"description"`
	Command     []string          `toml:"command"`
	ArgsHint    string            `toml:"args_hint"`
	DefaultArgs []string          `toml:"default_args"`
	Env         map[string]string `toml:"env"` // NAME -> what it is ("required: ..." or "optional: ...")
	Tier        string            `toml:"tier"`
	Policy      string            `toml:"policy"`
	URL         string            `toml:"url"`
}

// RequiredEnv names the environment variables the server cannot start without.
func (s Server) RequiredEnv() []string {
	var out []string
	for k, v := range s.Env {
		if strings.HasPrefix(v, "required") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Args are the arguments to use: the user's, or the defaults with $PWD replaced by dir.
func (s Server) Args(user []string, dir string) []string {
	if len(user) > 0 {
		return user
	}
	out := make([]string, len(s.DefaultArgs))
	for i, a := range s.DefaultArgs {
		out[i] = strings.ReplaceAll(a, "$PWD", dir)
	}
	return out
}

// Load parses the embedded catalog.
func Load() ([]Server, error) { return Parse(configs.CatalogTOML) }

// Parse reads a catalog: unknown keys, entries without a name or command, and duplicate
// names are errors.
func Parse(data []byte) ([]Server, error) {
	var doc struct {
		Servers []Server `toml:"servers"`
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&doc)
	if err != nil {
		return nil, fmt.Errorf("parse catalog: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("parse catalog: unknown keys %v", und)
	}
	seen := map[string]bool{}
	for i, s := range doc.Servers {
		switch {
		case s.Name == "":
			return nil, fmt.Errorf("catalog entry %d: no name", i+1)
		case len(s.Command) == 0:
			return nil, fmt.Errorf("catalog entry %s: no command", s.Name)
		case seen[s.Name]:
			return nil, fmt.Errorf("catalog entry %s: listed twice", s.Name)
		}
		seen[s.Name] = true
	}
	return doc.Servers, nil
}

// Lookup finds a server of the embedded catalog by name.
func Lookup(name string) (Server, bool, error) {
	all, err := Load()
	if err != nil {
		return Server{}, false, err
	}
	for _, s := range all {
		if s.Name == name {
			return s, true, nil
		}
	}
	return Server{}, false, nil
}
