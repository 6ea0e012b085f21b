// Package schemapin verifies signed MCP tool schemas and pins what it has seen.
//
// It implements the SchemaPin protocol as the reference Python, JavaScript and Rust SDKs
// do: the "schemapin-v1" canonical JSON form, ECDSA P-256 signatures over a double SHA-256
// digest (with an explicit compatibility switch for the single-hash form of the reference Go
// SDK), key discovery through https://{domain}/.well-known/schemapin.json, local discovery
// files and signed v1.4 trust bundles, and key revocation.
//
// On top of the protocol it keeps symbi's own state on a *sql.DB it is handed: a
// trust-on-first-use key pin per tool@domain (PinStore), and a rug-pull quarantine that pins
// the hash of every tool definition an upstream lists and holds changed definitions back
// until an operator approves them (Quarantine). Gate combines both for the gateway: one call
// per listed tool gives a Verification and whether the tool may be shown and called.
//
// The package does not read configuration files or environment variables of its own accord,
// and it decides nothing beyond the verification status: policy is the caller's job.
package schemapin
