package gateway

// FastCalls is how many tools/calls g served on the fast path (fastcall.go).
func FastCalls(g *Gateway) uint64 { return g.fastCalls.Load() }
