package sandbox

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Unsafe names a piece of isolation that a Spec gives up on purpose. Without the
// matching Unsafe in Spec.Unsafe, Validate refuses the setting; with it, Sandbox.Start
// logs a warning every time it starts the process.
type Unsafe string

// The unsafe opt-ins.
const (
	// UnsafeHostNetwork allows network = "host": the container shares the host's network
	// stack, loopback services (symbi's own listener, databases, cloud metadata) included.
	UnsafeHostNetwork Unsafe = "host_network"
	// UnsafeContainerNetwork allows network = "container:NAME": the container joins
	// another container's network namespace and reaches whatever that one can.
	UnsafeContainerNetwork Unsafe = "container_network"
	// UnsafeRootUser allows uid or gid 0 in the container.
	UnsafeRootUser Unsafe = "root_user"
)

// UnsafeOptions lists every Unsafe, for validation and documentation.
var UnsafeOptions = []Unsafe{UnsafeHostNetwork, UnsafeContainerNetwork, UnsafeRootUser}

// ParseUnsafe parses an unsafe opt-in as written in configuration.
func ParseUnsafe(s string) (Unsafe, error) {
	u := Unsafe(s)
	if !slices.Contains(UnsafeOptions, u) {
		names := make([]string, len(UnsafeOptions))
		for i, o := range UnsafeOptions {
			names[i] = string(o)
		}
		return "", fmt.Errorf("unsafe option %q: want one of %s", s, strings.Join(names, ", "))
	}
	return u, nil
}

// CheckNetwork checks a container network setting: "none", "bridge" or a Docker
// network's name are fine; "host" and "container:..." need their Unsafe opt-in.
func CheckNetwork(network string, unsafe []Unsafe) error {
	switch {
	case network == "host":
		if !slices.Contains(unsafe, UnsafeHostNetwork) {
			return fmt.Errorf(`network "host" shares the host's network stack (loopback services included): refused unless unsafe = [%q]`, UnsafeHostNetwork)
		}
	case strings.HasPrefix(network, "container:"):
		if strings.TrimPrefix(network, "container:") == "" {
			return fmt.Errorf("network %q: names no container", network)
		}
		if !slices.Contains(unsafe, UnsafeContainerNetwork) {
			return fmt.Errorf("network %q joins another container's network namespace: refused unless unsafe = [%q]", network, UnsafeContainerNetwork)
		}
	case strings.ContainsAny(network, ": \t\n/"):
		return fmt.Errorf("network %q: not a Docker network name", network)
	}
	return nil
}

// CheckUser checks a container user: a numeric "uid" or "uid:gid" (a name could be
// root inside the image), neither 0 unless UnsafeRootUser is given. "" means the default.
func CheckUser(user string, unsafe []Unsafe) error {
	if user == "" {
		return nil
	}
	uid, gid, hasGID := strings.Cut(user, ":")
	ids := []string{uid}
	if hasGID {
		ids = append(ids, gid)
	}
	root := false
	for _, id := range ids {
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return fmt.Errorf("user %q: want a numeric uid or uid:gid (a name may be root inside the image)", user)
		}
		root = root || n == 0
	}
	if root && !slices.Contains(unsafe, UnsafeRootUser) {
		return fmt.Errorf("user %q runs as root (uid or gid 0) in the container: refused unless unsafe = [%q]", user, UnsafeRootUser)
	}
	return nil
}
