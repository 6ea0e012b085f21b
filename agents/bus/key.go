package bus

import (
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
func LoadKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := create(path); err != nil {
			return nil, err
		}
		key, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read bus key %s: %w", path, err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("read bus key %s: %d bytes, want %d", path, len(key), KeySize)
	}
	return key, nil
}

func create(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bus key dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".bus-key-*")
	if err != nil {
		return fmt.Errorf("create bus key: %w", err)
	}
	defer os.Remove(f.Name())
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		f.Close()
		return fmt.Errorf("generate bus key: %w", err)
	}
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
