package gateway

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gorilla/websocket"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// WebSocketClientTransport connects an MCP client (the official SDK's mcp.Client) to a
// server that speaks MCP over WebSocket, such as symbi's /ws: subprotocol "mcp", one
// JSON-RPC message per text frame.
type WebSocketClientTransport struct {
	URL    string      // ws:// or wss://
	Header http.Header // e.g. Authorization
	// MaxMessageBytes bounds one inbound message; 0 = 4 MiB.
	MaxMessageBytes int64
}

// Connect implements mcp.Transport.
func (t *WebSocketClientTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	d := websocket.Dialer{Subprotocols: []string{"mcp"}}
	c, resp, err := d.DialContext(ctx, t.URL, t.Header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial websocket %s: %s: %w", t.URL, resp.Status, err)
		}
		return nil, fmt.Errorf("dial websocket %s: %w", t.URL, err)
	}
	if c.Subprotocol() != "mcp" {
		c.Close()
		return nil, fmt.Errorf("dial websocket %s: server did not accept subprotocol \"mcp\"", t.URL)
	}
	limit := t.MaxMessageBytes
	if limit == 0 {
		limit = 4 << 20
	}
	return newFrameConn(&wsFramer{c: c, limit: limit}, FrameConnOptions{Peer: "websocket server"}), nil
}
