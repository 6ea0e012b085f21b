package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/nats-io/nats.go"
	"github.com/symbi-dev/symbi/agents/bus"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/policy"
)

// typeBusMessage is the audit event of a bus message: its metadata and payload hash.
const typeBusMessage audit.Type = "bus.message"

// legacyBusKeyFile is where an earlier symbi kept the bus master key, beside the state
// file; it is moved to [bus] key_file.
const legacyBusKeyFile = "bus.key"

// Bounds of the tools' waits.
const (
	busMaxWait    = time.Minute
	busMaxTimeout = 5 * time.Minute
)

// busResourcePrefix names an identity's queue as a resource: symbi://bus/{identity}.
const busResourcePrefix = "symbi://bus/"

// openBus opens the agent bus on the state database; its events go to the audit trail
// and the arrival of a message to notify.
func openBus(ctx context.Context, rt *runtime, cfg *config.Config, log *slog.Logger, record func(audit.Event), notify func(string)) (*bus.Bus, error) {
	path := cfg.BusKeyFile()
	if moved, err := bus.MoveKey(filepath.Join(cfg.Server.DataDir, legacyBusKeyFile), path); err != nil {
		return nil, err
	} else if moved {
		log.Info("moved the bus master key out of the data directory's top level", "to", path)
	}
	key, err := bus.LoadKey(path)
	if err != nil {
		return nil, err
	}
	c := cfg.Bus
	o := &bus.Options{Logger: log, Notify: notify,
		Visibility: c.VisibilityTimeout.Duration, MaxAttempts: c.MaxAttempts, TTL: c.DefaultTTL.Duration, MaxTTL: c.MaxTTL.Duration,
		MaxPayload: int(c.MaxPayload), Rate: c.Rate, Burst: c.Burst,
		Record: func(ev bus.Event) {
			d := map[string]string{"id": ev.ID}
			for k, v := range map[string]string{"kind": ev.Kind, "from": ev.From, "to": ev.To, "topic": ev.Topic,
				"reply_to": ev.ReplyTo, "payload_sha256": ev.PayloadSHA256} {
				if v != "" {
					d[k] = v
				}
			}
			if ev.PayloadSHA256 != "" {
				d["size"] = strconv.Itoa(ev.Size)
			}
			who := ev.From
			if ev.Action == "bus/ack" || ev.Action == "bus/deliver" || ev.Action == "bus/dead_letter" {
				who = ev.To
			}
			record(audit.Event{Type: typeBusMessage, Action: ev.Action, Identity: who, Reason: ev.Reason, Detail: d})
		}}
	if c.Transport != config.BusNATS {
		return bus.Open(ctx, rt.db, key, o)
	}
	url := c.NATSURL
	if c.NATSEmbedded != nil {
		srv, err := bus.StartNATS(cfg.BusNATSListen(), cfg.BusNATSStoreDir(), log)
		if err != nil {
			return nil, err
		}
		rt.closers = append(rt.closers, func() error { srv.Close(); return nil })
		url = srv.URL()
		log.Info("embedded NATS server for the bus", "url", url, "store_dir", cfg.BusNATSStoreDir())
	}
	nc, err := connectNATS(ctx, url, c, log)
	if err != nil {
		return nil, err
	}
	rt.closers = append(rt.closers, func() error { nc.Close(); return nil })
	return bus.OpenNATS(ctx, bus.NATSOptions{Conn: nc, Prefix: c.NATSPrefix, Replicas: c.NATSReplicas, MaxBytes: int64(c.NATSMaxBytes)}, key, o)
}

// natsConnectWait bounds how long symbi waits at start-up for the bus's NATS server.
const natsConnectWait = 30 * time.Second

// connectNATS connects to the bus's NATS server, waiting for it up to natsConnectWait
// (another symbi may be starting it); later outages are reconnected without end.
func connectNATS(ctx context.Context, url string, c config.Bus, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("symbi bus"), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("bus NATS connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("bus NATS connection restored", "url", nc.ConnectedUrlRedacted()) })}
	if c.NATSCredentialsFile != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCredentialsFile))
	}
	if c.NATSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.NATSCAFile))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to the bus's NATS server: %w", err)
	}
	deadline := time.NewTimer(natsConnectWait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !nc.IsConnected() {
		select {
		case <-tick.C:
		case <-deadline.C:
			nc.Close()
			return nil, fmt.Errorf("connect to the bus's NATS server %s: not reachable after %s", url, natsConnectWait)
		case <-ctx.Done():
			nc.Close()
			return nil, fmt.Errorf("connect to the bus's NATS server: %w", ctx.Err())
		}
	}
	return nc, nil
}

type busSendIn struct {
	To      string `json:"to" jsonschema:"the recipient identity"`
	Payload string `json:"payload" jsonschema:"the message"`
	TTLMS   int64  `json:"ttl_ms,omitempty" jsonschema:"how long the message may wait for delivery, in milliseconds (default: the bus's default TTL; at most its max_ttl)"`
}

type busIDOut struct {
	ID string `json:"id"`
}

type busReceiveIn struct {
	Max    int `json:"max,omitempty" jsonschema:"at most this many messages (default 10, at most 100)"`
	WaitMS int `json:"wait_ms,omitempty" jsonschema:"wait up to this many milliseconds for a message (default 0, at most 60000)"`
}

type busMessage struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	From    string    `json:"from"`
	Topic   string    `json:"topic,omitempty"`
	Payload string    `json:"payload"`
	Created time.Time `json:"created"`
	Attempt int       `json:"attempt"`
}

type busReceiveOut struct {
	Messages []busMessage `json:"messages"`
}

type busAckIn struct {
	ID string `json:"id" jsonschema:"the id of a received message"`
}

type busTopicIn struct {
	Topic string `json:"topic" jsonschema:"the topic"`
}

type busPublishIn struct {
	Topic   string `json:"topic" jsonschema:"the topic"`
	Payload string `json:"payload" jsonschema:"the message"`
	TTLMS   int64  `json:"ttl_ms,omitempty" jsonschema:"how long each copy may wait for delivery, in milliseconds (default: the bus's default TTL; at most its max_ttl)"`
}

type busPublishOut struct {
	Recipients int `json:"recipients"`
}

type busSubscribeOut struct {
	Topic string `json:"topic"`
}

type busRequestIn struct {
	To        string `json:"to" jsonschema:"the identity to ask"`
	Payload   string `json:"payload" jsonschema:"the request"`
	TimeoutMS int    `json:"timeout_ms,omitempty" jsonschema:"wait up to this many milliseconds for the reply (default 30000, at most 300000)"`
}

type busReplyIn struct {
	ID      string `json:"id" jsonschema:"the id of the request being answered"`
	Payload string `json:"payload" jsonschema:"the reply"`
}

// busTools serves the bus to MCP clients as the caller's identity.
type busTools struct {
	bus    *bus.Bus
	policy policy.Engine
	log    *slog.Logger
	record func(audit.Event)

	visibility  time.Duration // for the tools' descriptions
	maxAttempts int
}

// caller returns the identity the bus acts for, refusing unauthenticated callers: an
// anonymous mailbox would be shared by everyone.
func (bt *busTools) caller(ctx context.Context) (gateway.Identity, error) {
	r, ok := gateway.RequestFrom(ctx)
	if !ok || r.Identity.ID == "" || r.Identity.ID == "anonymous" {
		return gateway.Identity{}, errors.New("the bus needs an authenticated identity (a bearer token, client certificate or stdio)")
	}
	return r.Identity, nil
}

// allow asks the policy about a bus operation; an error denies.
func (bt *busTools) allow(ctx context.Context, id gateway.Identity, action string, extra map[string]any) error {
	d, err := bt.policy.Decide(ctx, &policy.Input{Action: action, Identity: policy.Identity{ID: id.ID, Kind: id.Kind, Claims: id.Claims}, Extra: extra})
	if err != nil {
		bt.log.Error("policy decision for the bus", "action", action, "identity", id.ID, "err", err)
	}
	if err == nil && d.Allow {
		return nil
	}
	reason := d.Reason
	if reason == "" {
		reason = "denied by policy"
	}
	detail := map[string]string{}
	for k, v := range extra {
		detail[k] = fmt.Sprint(v)
	}
	bt.record(audit.Event{Type: audit.TypeDecision, Action: action, Identity: id.ID, IdentityKind: id.Kind,
		Decision: audit.Deny, Reason: reason, Outcome: audit.OutcomeDenied, Detail: detail})
	return fmt.Errorf("%s denied: %s", action, reason)
}

// failure is what a failed bus operation tells the client: what went wrong with the
// request, or only that the bus failed.
func (bt *busTools) failure(op string, err error) error {
	if rl, ok := errors.AsType[*bus.RateLimitError](err); ok {
		bt.record(audit.Event{Type: typeBusMessage, Action: "bus/rate_limited", Identity: rl.Sender, Outcome: audit.OutcomeDenied,
			Reason: "rate limit", Detail: map[string]string{"op": op, "retry_after_ms": strconv.FormatInt(rl.RetryAfter.Milliseconds(), 10)}})
		return rateLimited(rl)
	}
	for _, known := range []error{bus.ErrInvalid, bus.ErrNotFound, bus.ErrTimeout} {
		if errors.Is(err, known) {
			return err
		}
	}
	bt.log.Error("bus operation", "op", op, "err", err)
	return fmt.Errorf("%s failed: internal error", op)
}

// rateLimited is the JSON-RPC error of a sender over its rate: retryable, with the wait.
func rateLimited(rl *bus.RateLimitError) error {
	ms := max(1, (rl.RetryAfter + time.Millisecond - 1).Milliseconds())
	data, _ := json.Marshal(map[string]any{"retryable": true, "retry_after_ms": ms})
	return &jsonrpc.Error{Code: gateway.CodeUnavailable, Data: data,
		Message: fmt.Sprintf("rate limit: %s sends too fast; retry after %d ms", rl.Sender, ms)}
}

// ttlOf reads a ttl_ms argument (0: the default).
func ttlOf(ms int64) (time.Duration, error) {
	if ms < 0 || ms > int64(math.MaxInt64/time.Millisecond) {
		return 0, fmt.Errorf("%w: ttl_ms must be a positive number of milliseconds", bus.ErrInvalid)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func clampMS(ms int, def, limit time.Duration) time.Duration {
	if ms <= 0 {
		return def
	}
	return min(time.Duration(ms)*time.Millisecond, limit)
}

// addBusBuiltins registers the bus tools.
func addBusBuiltins(gw *gateway.Gateway, bt *busTools) {
	act := &mcp.ToolAnnotations{OpenWorldHint: new(false)}
	p := gateway.BuiltinPrefix + "__"
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "bus_send", Title: "Send a message",
		Description: "Send a direct message to another identity on symbi's bus. It is signed as you, stored encrypted, and kept until the recipient acknowledges it. Returns its id.",
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in busSendIn) (*mcp.CallToolResult, busIDOut, error) {
		id, err := bt.caller(ctx)
		if err != nil {
			return nil, busIDOut{}, err
		}
		if err := bt.allow(ctx, id, policy.ActionBusSend, map[string]any{"recipient": in.To}); err != nil {
			return nil, busIDOut{}, err
		}
		ttl, err := ttlOf(in.TTLMS)
		if err != nil {
			return nil, busIDOut{}, err
		}
		mid, err := bt.bus.SendTTL(ctx, id.ID, in.To, []byte(in.Payload), ttl)
		if err != nil {
			return nil, busIDOut{}, bt.failure("send", err)
		}
		return nil, busIDOut{ID: mid}, nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "bus_receive", Title: "Receive messages",
		Description: fmt.Sprintf("Receive your messages (direct, topic and requests), waiting up to wait_ms for the first. Acknowledge each with symbi__bus_ack once handled: an unacknowledged message is delivered again after %s, and dead-lettered after %d deliveries.", bt.visibility, bt.maxAttempts),
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in busReceiveIn) (*mcp.CallToolResult, busReceiveOut, error) {
		id, err := bt.caller(ctx)
		if err != nil {
			return nil, busReceiveOut{}, err
		}
		msgs, err := bt.bus.Receive(ctx, id.ID, in.Max, clampMS(in.WaitMS, 0, busMaxWait))
		if err != nil {
			return nil, busReceiveOut{}, bt.failure("receive", err)
		}
		out := busReceiveOut{Messages: make([]busMessage, 0, len(msgs))}
		for _, m := range msgs {
			out.Messages = append(out.Messages, busMessage{ID: m.ID, Kind: m.Kind, From: m.From, Topic: m.Topic,
				Payload: string(m.Payload), Created: m.Created, Attempt: m.Attempt})
		}
		return nil, out, nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "bus_ack", Title: "Acknowledge a message",
		Description: "Acknowledge a message you received: it is removed and not delivered again.",
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in busAckIn) (*mcp.CallToolResult, busIDOut, error) {
		id, err := bt.caller(ctx)
		if err != nil {
			return nil, busIDOut{}, err
		}
		if err := bt.bus.Ack(ctx, id.ID, in.ID); err != nil {
			return nil, busIDOut{}, bt.failure("ack", err)
		}
		return nil, busIDOut(in), nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "bus_publish", Title: "Publish to a topic",
		Description: "Publish a message to a topic: every subscriber gets a copy in its queue. Returns how many subscribers there were.",
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in busPublishIn) (*mcp.CallToolResult, busPublishOut, error) {
		id, err := bt.caller(ctx)
		if err != nil {
			return nil, busPublishOut{}, err
		}
		if err := bt.allow(ctx, id, policy.ActionBusPublish, map[string]any{"topic": in.Topic}); err != nil {
			return nil, busPublishOut{}, err
		}
		ttl, err := ttlOf(in.TTLMS)
		if err != nil {
			return nil, busPublishOut{}, err
		}
		n, err := bt.bus.PublishTTL(ctx, id.ID, in.Topic, []byte(in.Payload), ttl)
		if err != nil {
			return nil, busPublishOut{}, bt.failure("publish", err)
		}
		return nil, busPublishOut{Recipients: n}, nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "bus_subscribe", Title: "Subscribe to a topic",
		Description: "Subscribe to a topic: messages published to it from now on arrive in your queue (symbi__bus_receive).",
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in busTopicIn) (*mcp.CallToolResult, busSubscribeOut, error) {
		id, err := bt.caller(ctx)
		if err != nil {
			return nil, busSubscribeOut{}, err
		}
		if err := bt.allow(ctx, id, policy.ActionBusSubscribe, map[string]any{"topic": in.Topic}); err != nil {
			return nil, busSubscribeOut{}, err
		}
		if err := bt.bus.Subscribe(ctx, id.ID, in.Topic); err != nil {
			return nil, busSubscribeOut{}, bt.failure("subscribe", err)
		}
		return nil, busSubscribeOut(in), nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "bus_request", Title: "Send a request and wait for the reply",
		Description: "Send a request to another identity and wait up to timeout_ms for its reply (symbi__bus_reply). On timeout the request is withdrawn.",
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in busRequestIn) (*mcp.CallToolResult, busMessage, error) {
		id, err := bt.caller(ctx)
		if err != nil {
			return nil, busMessage{}, err
		}
		if err := bt.allow(ctx, id, policy.ActionBusSend, map[string]any{"recipient": in.To}); err != nil {
			return nil, busMessage{}, err
		}
		m, err := bt.bus.Request(ctx, id.ID, in.To, []byte(in.Payload), clampMS(in.TimeoutMS, 30*time.Second, busMaxTimeout))
		if err != nil {
			return nil, busMessage{}, bt.failure("request", err)
		}
		return nil, busMessage{ID: m.ID, Kind: m.Kind, From: m.From, Payload: string(m.Payload), Created: m.Created, Attempt: m.Attempt}, nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "bus_reply", Title: "Reply to a request",
		Description: "Reply to a request you received (its id from symbi__bus_receive). The request is acknowledged with it.",
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in busReplyIn) (*mcp.CallToolResult, busIDOut, error) {
		id, err := bt.caller(ctx)
		if err != nil {
			return nil, busIDOut{}, err
		}
		mid, err := bt.bus.Reply(ctx, id.ID, in.ID, []byte(in.Payload))
		if err != nil {
			return nil, busIDOut{}, bt.failure("reply", err)
		}
		return nil, busIDOut{ID: mid}, nil
	})
}

// busNotifier sends notifications/resources/updated for symbi://bus/{identity} when a
// message arrives for identity, from a goroutine of its own so that the bus never waits
// for a slow client. Arrivals for the same identity before the goroutine gets to them
// are one notification.
type busNotifier struct {
	gw  *gateway.Gateway
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]struct{}
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

func newBusNotifier(gw *gateway.Gateway, log *slog.Logger) *busNotifier {
	n := &busNotifier{gw: gw, log: log, pending: map[string]struct{}{}, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go n.run()
	return n
}

// arrived notes a message for identity; it never blocks.
func (n *busNotifier) arrived(identity string) {
	n.mu.Lock()
	n.pending[identity] = struct{}{}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *busNotifier) run() {
	defer close(n.done)
	for {
		select {
		case <-n.stop:
			return
		case <-n.wake:
		}
		n.mu.Lock()
		ids := n.pending
		n.pending = map[string]struct{}{}
		n.mu.Unlock()
		for id := range ids {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := n.gw.ResourceUpdated(ctx, busResourcePrefix+id); err != nil {
				n.log.Warn("bus notification", "identity", id, "err", err)
			}
			cancel()
		}
	}
}

// Close stops the goroutine and waits for it.
func (n *busNotifier) Close() error {
	close(n.stop)
	<-n.done
	return nil
}

type busQueueOut struct {
	Identity string        `json:"identity"`
	Pending  []bus.Pending `json:"pending"`
}

// addBusResource registers symbi://bus/{identity}: the caller's queue (metadata of the
// pending messages, no payload), readable and subscribable by that identity only.
func addBusResource(gw *gateway.Gateway, bt *busTools) {
	own := func(ctx context.Context, uri string) (gateway.Identity, error) {
		id, err := bt.caller(ctx)
		if err != nil {
			return gateway.Identity{}, err
		}
		if strings.TrimPrefix(uri, busResourcePrefix) != id.ID {
			return gateway.Identity{}, fmt.Errorf("%s is not your queue (yours is %s%s)", uri, busResourcePrefix, id.ID)
		}
		return id, nil
	}
	gw.AddBuiltinResourceTemplate(&mcp.ResourceTemplate{URITemplate: busResourcePrefix + "{identity}", Name: "bus-queue",
		Title: "Your bus queue", MIMEType: "application/json",
		Description: "The messages waiting for you on symbi's bus (metadata, no payload; receive them with symbi__bus_receive). Subscribe to it to be notified when one arrives.",
	}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		id, err := own(ctx, req.Params.URI)
		if err != nil {
			return nil, &gateway.Error{Kind: gateway.Denied, Public: err.Error()}
		}
		ps, err := bt.bus.Pending(ctx, id.ID, 0)
		if err != nil {
			return nil, bt.failure("list queue", err)
		}
		b, err := json.MarshalIndent(busQueueOut{Identity: id.ID, Pending: ps}, "", "  ")
		if err != nil {
			return nil, err
		}
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "application/json", Text: string(b)}}}, nil
	})
	gw.AllowBuiltinSubscribe(busResourcePrefix+"{identity}", func(ctx context.Context, uri string) error {
		_, err := own(ctx, uri)
		return err
	})
}
