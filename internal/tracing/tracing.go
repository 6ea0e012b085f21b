// Package tracing turns the standard OpenTelemetry environment (OTEL_SDK_DISABLED,
// OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG]) into a tracer
// provider that exports spans over OTLP. With no endpoint configured there is no provider
// at all: callers then skip tracing entirely, at the cost of a nil check. It does not
// decide what is traced; the gateway does.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// DefaultServiceName names symbi's spans when OTEL_SERVICE_NAME is not set.
const DefaultServiceName = "symbi"

// The protocols OTEL_EXPORTER_OTLP_PROTOCOL may name.
const (
	ProtocolHTTPProtobuf = "http/protobuf"
	ProtocolHTTPJSON     = "http/json"
	ProtocolGRPC         = "grpc"
)

// Config is what the environment asks for.
type Config struct {
	// Enabled is true when spans are to be exported; Reason says why not, otherwise.
	Enabled bool
	Reason  string
	// Protocol is one of the Protocol constants.
	Protocol string
	// Endpoint is the URL spans are sent to (for http/*, with the signal path).
	Endpoint    string
	ServiceName string
	// Sampler and SamplerArg are OTEL_TRACES_SAMPLER and its argument, normalised;
	// sampler is what they build.
	Sampler    string
	SamplerArg string
	sampler    sdktrace.Sampler
}

// String describes c in one line, for logs and symbi doctor.
func (c Config) String() string {
	if !c.Enabled {
		return "off (" + c.Reason + ")"
	}
	s := fmt.Sprintf("OTLP %s to %s, service %q, sampler %s", c.Protocol, c.Endpoint, c.ServiceName, c.Sampler)
	if c.SamplerArg != "" {
		s += " " + c.SamplerArg
	}
	return s
}

// FromEnv reads the configuration from getenv (os.Getenv in symbi). Tracing is on when an
// OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), or when OTEL_TRACES_EXPORTER=otlp asks for the
// default endpoint; OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn it off.
// Every malformed value is reported, together.
func FromEnv(getenv func(string) string) (Config, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	var problems []string
	bad := func(k, why string) { problems = append(problems, fmt.Sprintf("%s=%q: %s", k, getenv(k), why)) }

	c := Config{ServiceName: DefaultServiceName, Protocol: ProtocolHTTPProtobuf, Sampler: "parentbased_always_on"}
	if v := env("OTEL_SERVICE_NAME"); v != "" {
		c.ServiceName = v
	}
	disabled := false
	if v := env("OTEL_SDK_DISABLED"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("OTEL_SDK_DISABLED", "want true or false")
		}
		disabled = b
	}
	exporter := strings.ToLower(env("OTEL_TRACES_EXPORTER"))
	switch exporter {
	case "", "otlp", "none":
	default:
		bad("OTEL_TRACES_EXPORTER", `symbi exports traces with "otlp" (or "none")`)
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		switch v := env(k); v {
		case "":
		case ProtocolHTTPProtobuf, ProtocolHTTPJSON, ProtocolGRPC:
			c.Protocol = v
		default:
			bad(k, `want "http/protobuf", "http/json" or "grpc"`)
		}
	}
	general, signal := env("OTEL_EXPORTER_OTLP_ENDPOINT"), env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	for k, v := range map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": general, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": signal} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			bad(k, "want an http:// or https:// URL")
		}
	}
	c.Endpoint = endpointURL(c.Protocol, general, signal)
	if err := c.parseSampler(env("OTEL_TRACES_SAMPLER"), env("OTEL_TRACES_SAMPLER_ARG")); err != nil {
		bad("OTEL_TRACES_SAMPLER", err.Error())
	}
	if len(problems) > 0 {
		return Config{}, fmt.Errorf("configure tracing: %s", strings.Join(problems, "; "))
	}
	switch {
	case disabled:
		c.Reason = "OTEL_SDK_DISABLED=true"
	case exporter == "none":
		c.Reason = "OTEL_TRACES_EXPORTER=none"
	case general == "" && signal == "" && exporter == "":
		c.Reason = "no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	default:
		c.Enabled = true
	}
	return c, nil
}

// endpointURL is where the exporter sends spans, as the OTLP exporter specification
// resolves it: the signal's own endpoint as given, else the general one plus
// /v1/traces for HTTP, else the protocol's default.
func endpointURL(protocol, general, signal string) string {
	switch {
	case signal != "":
		return signal
	case general != "" && protocol == ProtocolGRPC:
		return general
	case general != "":
		return strings.TrimSuffix(general, "/") + "/v1/traces"
	case protocol == ProtocolGRPC:
		return "http://localhost:4317"
	}
	return "http://localhost:4318/v1/traces"
}

func (c *Config) parseSampler(name, arg string) error {
	name = strings.ToLower(name)
	if name == "" {
		c.sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
		return nil
	}
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || v < 0 || v > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", arg)
		}
		return v, nil
	}
	c.Sampler = name
	switch name {
	case "always_on":
		c.sampler = sdktrace.AlwaysSample()
	case "always_off":
		c.sampler = sdktrace.NeverSample()
	case "parentbased_always_on":
		c.sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
	case "parentbased_always_off":
		c.sampler = sdktrace.ParentBased(sdktrace.NeverSample())
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return err
		}
		c.SamplerArg = strconv.FormatFloat(r, 'g', -1, 64)
		c.sampler = sdktrace.TraceIDRatioBased(r)
		if name == "parentbased_traceidratio" {
			c.sampler = sdktrace.ParentBased(c.sampler)
		}
	default:
		return errors.New("want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio")
	}
	return nil
}

// Provider is a running tracer provider with its exporter.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// TracerProvider is what instrumented code takes spans from.
func (p *Provider) TracerProvider() trace.TracerProvider { return p.tp }

// Shutdown exports the spans still buffered and stops the exporter, bounded by ctx.
func (p *Provider) Shutdown(ctx context.Context) error {
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down tracing: %w", err)
	}
	return nil
}

// Start builds the provider c describes; nil (and no error) when tracing is off. The
// exporter itself also reads the OTEL_EXPORTER_OTLP_* variables this package does not
// interpret (headers, certificates, compression, timeout). Spans are batched and
// exported in the background; export failures are logged by the SDK's error handler,
// never returned to a request.
func Start(ctx context.Context, c Config, version string) (*Provider, error) {
	if !c.Enabled {
		return nil, nil
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch c.Protocol {
	case ProtocolGRPC:
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("start OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(c.ServiceName), semconv.ServiceVersion(version)))
	if err == nil {
		// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over the defaults.
		var env *resource.Resource
		if env, err = resource.New(ctx, resource.WithFromEnv()); err == nil {
			res, err = resource.Merge(res, env)
		}
	}
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("describe tracing resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second)),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(c.sampler),
	)
	return &Provider{tp: tp}, nil
}

// Reach tries a TCP connection to c's endpoint within timeout (symbi doctor).
func Reach(ctx context.Context, c Config, timeout time.Duration) error {
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return fmt.Errorf("parse endpoint: %w", err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[bool]string{true: "443", false: "80"}[u.Scheme == "https"])
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Errorf("reach OTLP endpoint %s: %w", host, err)
	}
	return conn.Close()
}

// SetLogger routes the SDK's own errors (a collector that cannot be reached, say) to log.
func SetLogger(log *slog.Logger) {
	if log == nil {
		return
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("export spans", "err", err) }))
}
