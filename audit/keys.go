package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFileName is the default name of the signing key inside the data directory; the
// public key is exported beside it with PublicKeySuffix appended.
const (
	KeyFileName     = "audit_ed25519.key"
	PublicKeySuffix = ".pub"
)

// loadOrCreateKey reads the PKCS#8 PEM signing key at path, or generates one (0600) when
// the file does not exist. Either way the public key is (re)exported to path+".pub".
// Processes that start together agree on one key: the key file is created with a hard
// link that fails if another process created it first, and then that key is used.
func loadOrCreateKey(path string) (ed25519.PrivateKey, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, false, fmt.Errorf("generate audit key: %w", gerr)
		}
		created, cerr := createPrivateKey(path, priv)
		if cerr != nil {
			return nil, false, cerr
		}
		if created {
			return priv, true, writePublicKey(path+PublicKeySuffix, priv.Public().(ed25519.PublicKey))
		}
		b, err = os.ReadFile(path) // another process created it first
	}
	if err != nil {
		return nil, false, fmt.Errorf("read audit key: %w", err)
	}
	priv, err := parsePrivateKey(b)
	if err != nil {
		return nil, false, fmt.Errorf("parse audit key %s: %w", path, err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	if cur, err := os.ReadFile(path + PublicKeySuffix); err != nil || !pemEqualsKey(cur, pub) {
		if err := writePublicKey(path+PublicKeySuffix, pub); err != nil {
			return nil, false, err
		}
	}
	return priv, false, nil
}

func parsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("not an Ed25519 key")
	}
	return priv, nil
}

func pemEqualsKey(b []byte, pub ed25519.PublicKey) bool {
	got, err := ParsePublicKey(b)
	return err == nil && got.Equal(pub)
}

// writePrivateKey writes the key with mode 0600 via a temporary file and a rename.
func writePrivateKey(path string, priv ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("encode audit key: %w", err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// createPrivateKey installs the key at path unless a file is there already (then it
// reports false and leaves it): written to a temporary file, synced, then hard-linked,
// so path is never seen half written and never replaced.
func createPrivateKey(path string, priv ed25519.PrivateKey) (bool, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return false, fmt.Errorf("encode audit key: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new*")
	if err != nil {
		return false, fmt.Errorf("create audit key: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("write audit key: %w", err)
	}
	if err := os.Link(f.Name(), path); errors.Is(err, fs.ErrExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("install audit key %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return false, fmt.Errorf("sync audit key dir: %w", err)
	}
	return true, nil
}

func writePublicKey(path string, pub ed25519.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("encode audit public key: %w", err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

// ParsePublicKey decodes an Ed25519 public key from PEM ("PUBLIC KEY", PKIX), as exported
// beside the signing key.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("parse public key: not a PEM PUBLIC KEY")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("parse public key: not an Ed25519 key")
	}
	return pub, nil
}

// ReadPublicKey reads a PEM public key file.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	return ParsePublicKey(b)
}

// writeFileAtomic writes data to a temporary file in the same directory, syncs it and
// renames it over path, so readers see the old or the new content, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod temp file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write temp file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync temp file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close temp file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename temp file: %w", err)
	}
	ok = true
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// MoveKey moves a signing key (with its exported public keys: KEY.pub and the archived
// KEY.<id>.pub of rotated keys) from an old location to a new one, for trails whose
// key an older symbi kept inside the trail directory. It does nothing when there is no
// key at from, and refuses when both locations hold a key. It reports whether it moved.
func MoveKey(from, to string) (bool, error) {
	if _, err := os.Stat(from); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if _, err := os.Stat(to); err == nil {
		return false, fmt.Errorf("move audit key: both %s and %s exist; keep one", from, to)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return false, fmt.Errorf("move audit key: %w", err)
	}
	pubs, _ := filepath.Glob(from + ".*" + PublicKeySuffix)
	for _, p := range append(pubs, from+PublicKeySuffix) {
		if err := moveFile(p, to+p[len(from):], 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("move audit public key: %w", err)
		}
	}
	if err := moveFile(from, to, 0o600); err != nil {
		if _, serr := os.Stat(to); errors.Is(err, fs.ErrNotExist) && serr == nil {
			return false, nil // another process starting at the same time moved it
		}
		return false, fmt.Errorf("move audit key: %w", err)
	}
	return true, nil
}

// moveFile renames, or copies and removes when from and to are on different devices.
func moveFile(from, to string, perm os.FileMode) error {
	if err := os.Rename(from, to); err == nil {
		return syncDir(filepath.Dir(to))
	}
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(to, b, perm); err != nil {
		return err
	}
	return os.Remove(from)
}
