// Package bus is symbi's agent bus: messages between identities (MCP clients and
// agents), kept in the SQLite state file so that delivery survives a restart.
//
// It offers direct messages with acknowledgement (an unacknowledged message comes back
// after a visibility timeout and goes to the dead letters after MaxAttempts deliveries;
// every message has a TTL), topics (Publish puts a copy in the queue of every
// subscriber) and request/response (Request waits up to a timeout for the matching
// Reply).
//
// Every message is signed with its sender's Ed25519 key and verified when it is
// delivered: a message whose signature or ciphertext does not check out is never
// delivered, it is dead-lettered and reported. Payloads are stored encrypted with
// AES-256-GCM under their recipient's data key; the data keys and the identities'
// private signing keys are kept in the state store, wrapped (AES-256-GCM) by a master
// key the caller supplies and keeps out of the state store (symbi: a file of its own).
// A copy of the state file alone reveals no payload; a data key tampered with makes its
// messages fail verification. Senders are rate-limited by a token bucket each.
//
// The bus does not decide policy or write the audit trail: its caller checks policy,
// and every message is handed, by metadata and payload hash only, to Options.Record.
package bus
