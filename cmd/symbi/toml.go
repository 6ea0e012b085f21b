package main

import (
	"io"

	"github.com/BurntSushi/toml"
)

func writeTOML(w io.Writer, v any) error { return toml.NewEncoder(w).Encode(v) }
