// Package rag is symbi's context and knowledge system: it owns text chunking, embedders
// (the offline builtin one and clients of OpenAI-compatible and Ollama endpoints), the
// vector [Store] (SQLite with sqlite-vec by default) with hybrid ranking (vector
// similarity fused with BM25 by reciprocal rank fusion), per-identity memory, the
// knowledge base, and the semantic index over upstream tools.
//
// It does not decide or record anything: the gateway authenticates, asks the policy and
// audits before it calls into this package, and hands it the identity a request runs as.
// It reads no configuration of its own; cmd/symbi translates the [context] section into
// the options here.
package rag
