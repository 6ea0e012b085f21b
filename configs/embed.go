// Package configs holds symbi's configuration data; the only Go here embeds the data the
// binary carries (the server catalog, read by internal/catalog).
package configs

import _ "embed"

// CatalogTOML is catalog.toml: the well-known MCP servers `symbi add NAME` knows offline.
//
//go:embed catalog.toml
var CatalogTOML []byte
