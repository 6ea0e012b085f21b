package gateway

// FastCalls is how many tools/calls g served on the fast path (fastcall.go).
func FastCalls(g *Gateway) uint64 { return g.fastCalls.Load() }

// FastServed is how many tools/calls g answered on the client side of the fast path
// (fastserve.go).
func FastServed(g *Gateway) uint64 { return g.fastServed.Load() }
