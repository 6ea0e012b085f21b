package secrets

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Test credentials are assembled at run time so that no token-shaped literal sits in the
// source (and trips secret scanners on the repository itself). None of them is real.
var (
	rep        = strings.Repeat
	awsID      = "AKI" + "A" + "Z7Q3WJ5XK2LM4NPR"
	awsSecret  = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "Q2ZsT8uH4v"
	ghToken    = "gh" + "p_" + "R8mN2kP5qL7wX3vB9cJ4hT6yF1dS0aZeG2uK"
	ghFine     = "github" + "_pat_" + "11ABCDEFG0aB3dE5fG7hJk_" + rep("aB3dE5fG7h", 5) + "kLmNpQrSt"
	glToken    = "gl" + "pat-" + "x7Yq2Lm9Nv4Rt6Ws1Kd8"
	slackBot   = "xo" + "xb-" + "2710435982-8124702913-Zm5Hq8JvYtR2kLwN4pC6aX3s"
	slackHook  = "https://hooks.slack.com/services/" + "T024BE7LD/B0A1B2C3D/" + "aBcDeFgHiJkLmNoPqRsTuVwX"
	stripeKey  = "sk" + "_live_" + "51HqLyjWDarjtT1zdp7dcXZ0aB3kM9"
	openaiKey  = "sk-" + "proj-" + "Xy7Kp2Lm9Qw4Rt6Zs1Vb8Nc3Hd5Jf0Gg2Aa4Ee6Ii8Oo"
	anthropic  = "sk-" + "ant-api03-" + "Q9wE7rT5yU3iO1pA8sD6fG4hJ2kL0zXcVbNm-QwErTyUiOpAsDfGhJkL_1234567890abcdefABCDEF-AA"
	gcpAPIKey  = "AI" + "za" + "SyD8kN3qW7xZ2mR5tY9uV1bC4nM6lK0jH3g"
	jwt        = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9" + "." + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ" + "." + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	pemKey     = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq8QmZk3XJ9cUe5Lw0r\nbase64base64base64==\n-----END RSA " + "PRIVATE KEY-----"
	azureKey   = rep("Zk9x", 21) + "ab==" // 86 chars + ==
	azureAD    = "abc8Q~" + "K2mN5pQ8rT1vW4yZ7bD0fH3jL6nP9sU2wX"
	hfToken    = "hf" + "_" + "kQwErTyUiOpAsDfGhJkLzXcVbNmQwErTyU"
	sendgrid   = "SG" + "." + "ngeVfQFYQlKU0ufo8x5d1A" + "." + "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"
	npmToken   = "np" + "m_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
	genericKey = "Zq8Lm2Xv9Rt4Wn6Kp1Yb3Hc7"
)

func TestFindAndMask(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     string
		rules  []string
		masked string
	}{
		{"aws access key id", "key " + awsID + " here", []string{"aws-access-key-id"}, "key AKIA**** here"},
		{"aws secret assignment", "aws_secret_access_key = " + awsSecret + "\n", []string{"aws-secret-access-key"}, "aws_secret_access_key = ****\n"},
		{"aws pair in env file", "AWS_ACCESS_KEY_ID=" + awsID + "\nAWS_SECRET_ACCESS_KEY=" + awsSecret,
			[]string{"aws-access-key-id", "aws-secret-access-key"}, "AWS_ACCESS_KEY_ID=AKIA****\nAWS_SECRET_ACCESS_KEY=****"},
		{"github classic", "token: " + ghToken, []string{"github-token"}, "token: ghp_****"},
		{"github fine grained", "use " + ghFine + " now", []string{"github-fine-grained-token"}, "use github_pat_**** now"},
		{"gitlab", "GL=" + glToken, []string{"gitlab-token"}, "GL=glpat-****"},
		{"slack bot", "Authorization: " + slackBot, []string{"slack-token"}, "Authorization: xoxb-****"},
		{"slack webhook", "post to " + slackHook, []string{"slack-webhook"}, "post to https://hooks.slack.com/services/****"},
		{"stripe", `{"stripe":"` + stripeKey + `"}`, []string{"stripe-key"}, `{"stripe":"sk_live_****"}`},
		{"openai", "OPENAI_API_KEY=" + openaiKey, []string{"openai-key"}, "OPENAI_API_KEY=sk-proj-****"},
		{"anthropic", "x-api-key: " + anthropic, []string{"anthropic-key"}, "x-api-key: sk-ant-api03-****"},
		{"gcp api key", "https://maps.googleapis.com/x?key=" + gcpAPIKey, []string{"gcp-api-key"}, "https://maps.googleapis.com/x?key=AIza****"},
		{"gcp service account", `{"type": "service_account", "private_key_id": "` + rep("a1b2c3d4e5", 4) + `", "private_key": "` +
			strings.ReplaceAll(pemKey, "\n", `\n`) + `"}`, []string{"gcp-service-account-key-id", "private-key"},
			`{"type": "service_account", "private_key_id": "****", "private_key": "-----BEGIN RSA PRIVATE KEY-----****-----END RSA PRIVATE KEY-----"}`},
		{"jwt", "Bearer " + jwt, []string{"jwt"}, "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.****"},
		{"pem", "key:\n" + pemKey + "\nend", []string{"private-key"}, "key:\n-----BEGIN RSA PRIVATE KEY-----****-----END RSA PRIVATE KEY-----\nend"},
		{"pem truncated", "-----BEGIN " + "PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7", []string{"private-key-truncated"}, "-----BEGIN PRIVATE KEY-----****"},
		{"azure storage", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + azureKey + ";EndpointSuffix=core.windows.net",
			[]string{"azure-storage-account-key"}, "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=****;EndpointSuffix=core.windows.net"},
		{"azure ad secret", "client_secret " + azureAD + " x", []string{"azure-ad-client-secret"}, "client_secret **** x"},
		{"hugging face", "HF " + hfToken, []string{"huggingface-token"}, "HF hf_****"},
		{"sendgrid", sendgrid, []string{"sendgrid-key"}, "SG.****"},
		{"npm", "//registry.npmjs.org/:_authToken=" + npmToken, []string{"npm-token"}, "//registry.npmjs.org/:_authToken=npm_****"},
		{"password in url", "DATABASE_URL=postgres://app:s3cr3t-Pa55@db.internal:5432/app", []string{"password-in-url"}, "DATABASE_URL=postgres://app:****@db.internal:5432/app"},
		{"placeholder password in url", "postgres://app:${DB_PASSWORD}@db/app", nil, "postgres://app:${DB_PASSWORD}@db/app"},
		{"basic auth header", "Authorization: Basic dXNlcjpwYXNzd29yZA==", []string{"basic-auth-header"}, "Authorization: Basic ****"},
		{"generic password", `mysql -u root --password=hunter22 db`, []string{"generic-password"}, `mysql -u root --password=**** db`},
		{"json password", `{"user": "a", "password": "Tr0ub4dor&3"}`, []string{"generic-password"}, `{"user": "a", "password": "****"}`},
		{"escaped json password", `{\"password\":\"Tr0ub4dor3\"}`, []string{"generic-password"}, `{\"password\":\"****\"}`},
		{"generic api key", "api_key = " + genericKey, []string{"generic-api-key"}, "api_key = ****"},
		{"specific wins over generic", "api_key=" + awsID, []string{"aws-access-key-id"}, "api_key=AKIA****"},
		{"several in a row", ghToken + " " + ghToken, []string{"github-token", "github-token"}, "ghp_**** ghp_****"},

		// Things that must not be reported.
		{"low entropy generic", "api_key = aaaaaaaaaaaaaaaaaaaaaaaa", nil, "api_key = aaaaaaaaaaaaaaaaaaaaaaaa"},
		{"placeholder password", "password: <your-password>", nil, "password: <your-password>"},
		{"env placeholder", "password=${PASSWORD}", nil, "password=${PASSWORD}"},
		{"already masked", "password=****", nil, "password=****"},
		{"prose", "Reset your password in the settings page; the token expires in an hour.", nil, "Reset your password in the settings page; the token expires in an hour."},
		{"plain url", "https://example.com/path?q=1", nil, "https://example.com/path?q=1"},
		{"short", "AKIA", nil, "AKIA"},
		{"sha256", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", nil, "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
		{"uuid", "request 123e4567-e89b-12d3-a456-426614174000 done", nil, "request 123e4567-e89b-12d3-a456-426614174000 done"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			masked, found := Default().Mask(tc.in)
			var rules []string
			for _, f := range found {
				rules = append(rules, f.RuleID)
				if f.Start < 0 || f.End > len(tc.in) || f.Start >= f.End {
					t.Errorf("finding %+v has bad offsets", f)
				}
			}
			if diff := cmp.Diff(tc.rules, rules); diff != "" {
				t.Errorf("rules mismatch (-want +got):\n%s", diff)
			}
			if masked != tc.masked {
				t.Errorf("Mask:\n got %q\nwant %q", masked, tc.masked)
			}
			if diff := cmp.Diff(found, Default().Find(tc.in)); diff != "" {
				t.Errorf("Find and Mask disagree:\n%s", diff)
			}
		})
	}
}

func TestFindingsNeverHoldSecrets(t *testing.T) {
	text := "k=" + awsID + " t=" + ghToken + " u=postgres://a:pw12345678@h/d"
	found := Default().Find(text)
	if len(found) != 3 {
		t.Fatalf("found %d, want 3: %+v", len(found), found)
	}
	b, _ := json.Marshal(found)
	for _, secret := range []string{awsID[4:], ghToken[4:], "pw12345678"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("findings %s contain the secret %q", b, secret)
		}
	}
}

func TestValues(t *testing.T) {
	in := map[string]any{
		"query":     "select 1",
		"db":        map[string]any{"url": "mysql://root:Sup3rS3cret@db/x", "password": "hunter2", "port": 3306.0},
		"env":       []any{"A=1", "GITHUB_TOKEN=" + ghToken},
		"apiKey":    "anything-goes",
		"x-Api-Key": "k",
		"token":     "",
		"secret":    "<redacted>",
		"notes":     "nothing here",
		"nested":    []any{map[string]any{"client_secret": "abc"}},
	}
	before, _ := json.Marshal(in)

	wantFindings := []Finding{
		{RuleID: SensitiveFieldRule, Path: "arguments.apiKey", End: 13},
		{RuleID: SensitiveFieldRule, Path: "arguments.db.password", End: 7},
		{RuleID: "password-in-url", Path: "arguments.db.url", Start: 13, End: 24},
		{RuleID: "github-token", Path: "arguments.env[1]", Start: 17, End: 53},
		{RuleID: SensitiveFieldRule, Path: "arguments.nested[0].client_secret", End: 3},
		{RuleID: SensitiveFieldRule, Path: "arguments.x-Api-Key", End: 1},
	}
	found := Default().FindValue(in, "arguments")
	if diff := cmp.Diff(wantFindings, found); diff != "" {
		t.Errorf("FindValue mismatch (-want +got):\n%s", diff)
	}

	out, found2 := Default().MaskValue(in, "arguments")
	if diff := cmp.Diff(wantFindings, found2); diff != "" {
		t.Errorf("MaskValue findings mismatch (-want +got):\n%s", diff)
	}
	want := map[string]any{
		"query":     "select 1",
		"db":        map[string]any{"url": "mysql://root:****@db/x", "password": "****", "port": 3306.0},
		"env":       []any{"A=1", "GITHUB_TOKEN=ghp_****"},
		"apiKey":    "****",
		"x-Api-Key": "****",
		"token":     "",
		"secret":    "<redacted>",
		"notes":     "nothing here",
		"nested":    []any{map[string]any{"client_secret": "****"}},
	}
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("MaskValue mismatch (-want +got):\n%s", diff)
	}
	after, _ := json.Marshal(in)
	if string(before) != string(after) {
		t.Errorf("MaskValue modified its input")
	}
	// Unchanged parts are shared, not copied.
	clean := map[string]any{"a": []any{"x"}, "b": "y"}
	if out, found := Default().MaskValue(clean, "result"); len(found) != 0 || !sameMap(out, clean) {
		t.Errorf("clean value was copied or reported: %v", found)
	}
	// A bare string value.
	if out, found := Default().MaskValue("t="+ghToken, "result.content[0].text"); out != "t=ghp_****" || len(found) != 1 || found[0].Path != "result.content[0].text" {
		t.Errorf("string value: %v %+v", out, found)
	}
}

func sameMap(a any, b map[string]any) bool {
	m, ok := a.(map[string]any)
	if !ok {
		return false
	}
	m["__probe"] = true
	_, shared := b["__probe"]
	delete(m, "__probe")
	return shared
}

func TestIsSensitiveKey(t *testing.T) {
	for k, want := range map[string]bool{
		"password": true, "PASSWORD": true, "db_password": true, "api_key": true, "apiKey": true,
		"X-API-KEY": true, "client_secret": true, "github_token": false, "access_token": true,
		"Authorization": true, "private_key": true, "token": true,
		"username": false, "max_tokens": false, "next_page_token": false, "tokens": false,
		"passage": false, "keyword": false, "secretary": false,
	} {
		if got := IsSensitiveKey(k); got != want {
			t.Errorf("IsSensitiveKey(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestEveryRuleHasATest(t *testing.T) {
	// The table above must exercise every default rule at least once.
	seen := map[string]bool{}
	for _, s := range []string{
		"key " + awsID, "aws_secret_access_key = " + awsSecret, ghToken, ghFine, "GL=" + glToken, slackBot, slackHook,
		stripeKey, "whsec_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7", openaiKey, anthropic, gcpAPIKey,
		`"private_key_id": "` + rep("a1b2c3d4e5", 4) + `"`, "GOCSPX-" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9v",
		"ya29." + "a0AfH6SMBx7Kp2Lm9Qw4Rt6Zs1Vb8Nc3Hd5", jwt, pemKey, "-----BEGIN " + "PRIVATE KEY-----\n" + rep("MIIEvQIBADANBgkq", 3),
		"AccountKey=" + azureKey, "SharedAccessKey=" + rep("aB3dE5fG7h", 4) + "kL1=", "https://a.blob.core.windows.net/c?sv=2020&sig=" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5%3D",
		"x " + azureAD, "dop_v1_" + rep("a1b2c3d4", 8), "GR1348941" + "aB3dE5fG7hJ9kL1mN3pQ", npmToken, "pypi-" + "AgEIcHlwaS5vcmc" + rep("aB3dE5fG7h", 6),
		"postgres://u:pw@h", "Authorization: Bearer abcdefgh12345678", "password=hunter22", "api_key=" + genericKey,
		hfToken, sendgrid, "SK" + rep("0123456789abcdef", 2), "shpat_" + rep("a1b2c3d4", 4), "dapi" + rep("a1b2c3d4", 4),
	} {
		for _, f := range Default().Find(s) {
			seen[f.RuleID] = true
		}
	}
	for _, r := range DefaultRules() {
		if !seen[r.ID] {
			t.Errorf("rule %s matched none of the samples", r.ID)
		}
	}
}

func FuzzScanner(f *testing.F) {
	for _, s := range []string{
		"api_key=" + genericKey, "postgres://u:p@h", pemKey, jwt, ghToken + ghToken, "password: '<x>'",
		"AccountKey=" + azureKey, `{\"password\":\"abc12345\"}`, "sk-" + "ant-api03-" + rep("x", 40),
		"-----BEGIN " + "PRIVATE KEY-----" + rep("A", 40),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		masked, found := Default().Mask(s)
		prev := 0
		for _, fi := range found {
			if fi.Start < prev || fi.End <= fi.Start || fi.End > len(s) {
				t.Fatalf("bad finding %+v (prev end %d, len %d)", fi, prev, len(s))
			}
			prev = fi.End
		}
		if len(found) == 0 && masked != s {
			t.Fatalf("no finding but text changed")
		}
		// Masking what is masked changes nothing more.
		again, found2 := Default().Mask(masked)
		if again != masked {
			t.Fatalf("mask is not idempotent:\n in %q\n 1st %q (%v)\n 2nd %q (%v)", s, masked, found, again, found2)
		}
		// A JSON document built around the string is scanned without panics, and its
		// masked form is still valid JSON.
		out, _ := Default().MaskValue(map[string]any{"password": s, "v": []any{s}}, "arguments")
		if _, err := json.Marshal(out); err != nil {
			t.Fatalf("masked value does not marshal: %v", err)
		}
	})
}

func BenchmarkMaskText(b *testing.B) {
	text := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. The password field is documented below. ", 100) +
		"api_key=" + genericKey + " and " + ghToken
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, found := Default().Mask(text); len(found) != 2 {
			b.Fatal(found)
		}
	}
}
