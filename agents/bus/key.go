package bus

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadKey reads the master key at path, creating it (32 random bytes, mode 0600) when
// it does not exist. Several processes may race to create it: the key is written to a
// temporary file and linked into place, so one wins and all read a complete key.
//
// A key at path+NextKeySuffix means a rotation (RotateKeyFile) did not finish: LoadKey
// refuses until it is run again.
func LoadKey(path string) ([]byte, error) {
	if _, err := os.Stat(path + NextKeySuffix); err == nil {
		return nil, fmt.Errorf("read bus key %s: a rotation of the master key did not finish (%s exists): run symbi bus rotate-key again", path, path+NextKeySuffix)
	}
	return loadOrCreate(path)
}

func create(path string) error {
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return fmt.Errorf("generate bus key: %w", err)
	}
	return install(path, key)
}

// install writes key at path (mode 0600) unless a key is there already.
func install(path string, key []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bus key dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".bus-key-*")
	if err != nil {
		return fmt.Errorf("create bus key: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write bus key: %w", err)
	}
	if err := os.Link(f.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("install bus key %s: %w", path, err)
	}
	return nil
}

// MoveKey moves a master key from an older location (from) to path, for a data
// directory that an earlier symbi set up. It does nothing when from does not exist, and
// refuses when both do. It reports whether it moved the key.
func MoveKey(from, path string) (bool, error) {
	key, err := os.ReadFile(from)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("move bus key: %w", err)
	}
	if len(key) != KeySize {
		return false, fmt.Errorf("move bus key %s: %d bytes, want %d", from, len(key), KeySize)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("move bus key: %w", err)
	}
	// A hard link never replaces a key already at path. Another symbi starting on the same
	// data directory may be moving the same key at this moment: the same bytes at path
	// mean its move won, and the old name can go.
	switch err := os.Link(from, path); {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		have, rerr := os.ReadFile(path)
		if rerr != nil {
			return false, fmt.Errorf("move bus key: %w", rerr)
		}
		if !bytes.Equal(have, key) {
			return false, fmt.Errorf("move bus key: both %s and %s exist and differ; keep one", from, path)
		}
	default:
		// Another device: write the copy (it is synced and linked into place).
		if err := install(path, key); err != nil {
			return false, err
		}
	}
	if err := os.Remove(from); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("move bus key: %w", err)
	}
	return true, nil
}
