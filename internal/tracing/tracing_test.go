package tracing

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    Config
		wantErr []string // substrings of the error, one per problem
	}{
		{name: "nothing set", env: nil,
			want: Config{Reason: "no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Protocol: "http/protobuf",
				Endpoint: "http://localhost:4318/v1/traces", ServiceName: "symbi", Sampler: "parentbased_always_on"}},
		{name: "general endpoint gets the signal path", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
			want: Config{Enabled: true, Protocol: "http/protobuf", Endpoint: "http://collector:4318/v1/traces", ServiceName: "symbi", Sampler: "parentbased_always_on"}},
		{name: "signal endpoint as given", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/custom"},
			want: Config{Enabled: true, Protocol: "http/protobuf", Endpoint: "https://b/custom", ServiceName: "symbi", Sampler: "parentbased_always_on"}},
		{name: "grpc keeps the endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			want: Config{Enabled: true, Protocol: "grpc", Endpoint: "http://c:4317", ServiceName: "symbi", Sampler: "parentbased_always_on"}},
		{name: "traces protocol wins", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
			want: Config{Enabled: true, Protocol: "http/json", Endpoint: "http://c:4317/v1/traces", ServiceName: "symbi", Sampler: "parentbased_always_on"}},
		{name: "exporter otlp alone uses the default endpoint", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "gw-1"},
			want: Config{Enabled: true, Protocol: "http/protobuf", Endpoint: "http://localhost:4318/v1/traces", ServiceName: "gw-1", Sampler: "parentbased_always_on"}},
		{name: "sdk disabled", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"},
			want: Config{Reason: "OTEL_SDK_DISABLED=true", Protocol: "http/protobuf", Endpoint: "http://a:4318/v1/traces", ServiceName: "symbi", Sampler: "parentbased_always_on"}},
		{name: "exporter none", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "none"},
			want: Config{Reason: "OTEL_TRACES_EXPORTER=none", Protocol: "http/protobuf", Endpoint: "http://a:4318/v1/traces", ServiceName: "symbi", Sampler: "parentbased_always_on"}},
		{name: "ratio sampler", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_SAMPLER": "ParentBased_TraceIDRatio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			want: Config{Enabled: true, Protocol: "http/protobuf", Endpoint: "http://a:4318/v1/traces", ServiceName: "symbi", Sampler: "parentbased_traceidratio", SamplerArg: "0.25"}},
		{name: "every problem reported", env: map[string]string{
			"OTEL_SDK_DISABLED": "maybe", "OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift",
			"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
			wantErr: []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER_ARG"}},
		{name: "unknown sampler", env: map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, wantErr: []string{"OTEL_TRACES_SAMPLER"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("FromEnv = %v, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreUnexported(Config{})); diff != "" {
				t.Errorf("FromEnv mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStartOffIsNil(t *testing.T) {
	c, err := FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(context.Background(), c, "test")
	if err != nil || p != nil {
		t.Fatalf("Start(off) = %v, %v; want nil, nil", p, err)
	}
}

func TestStartBothProtocols(t *testing.T) {
	for _, proto := range []string{"http/protobuf", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": proto}
			c, err := FromEnv(func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			p, err := Start(context.Background(), c, "test")
			if err != nil || p == nil {
				t.Fatalf("Start = %v, %v", p, err)
			}
			_, span := p.TracerProvider().Tracer("t").Start(context.Background(), "s")
			if !span.SpanContext().IsValid() || !span.IsRecording() {
				t.Error("span not recorded")
			}
			span.End()
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // nothing listens: do not wait for the export
			_ = p.Shutdown(ctx)
		})
	}
}
