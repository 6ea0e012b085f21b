package gateway

import (
	"crypto/sha256"
	"encoding/hex"
)

// MaxToolNameLen is the longest tool or prompt name symbi exposes.
const MaxToolNameLen = 64

// ExposedName namespaces an upstream's tool or prompt name as "<prefix>__<name>" (or keeps
// name when prefix is empty). Names longer than MaxToolNameLen are shortened
// deterministically: the head of the name, "_", and 8 hex digits of SHA-256 of the full
// name, so two long names never collide by truncation alone.
func ExposedName(prefix, name string) string {
	full := name
	if prefix != "" {
		full = prefix + "__" + name
	}
	if len(full) <= MaxToolNameLen {
		return full
	}
	sum := sha256.Sum256([]byte(full))
	suffix := "_" + hex.EncodeToString(sum[:4])
	return full[:MaxToolNameLen-len(suffix)] + suffix
}
