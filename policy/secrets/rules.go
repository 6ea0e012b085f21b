package secrets

import (
	"regexp"
	"strings"
)

// SensitiveFieldRule is the rule id of a string found under a credential-named key.
const SensitiveFieldRule = "sensitive-field"

// sensitiveKeys are normalised key names (lower case, no '-', '_', '.', ' ') whose string
// values are credentials whatever they look like.
var sensitiveKeys = map[string]bool{
	"password": true, "passwd": true, "pwd": true, "passphrase": true, "pass": true,
	"secret": true, "clientsecret": true, "secretkey": true, "secretaccesskey": true,
	"apikey": true, "xapikey": true, "apitoken": true, "accesskey": true,
	"token": true, "accesstoken": true, "authtoken": true, "refreshtoken": true,
	"idtoken": true, "sessiontoken": true, "bearertoken": true, "securitytoken": true,
	"privatekey": true, "authorization": true, "proxyauthorization": true,
	"credential": true, "credentials": true, "cookie": true, "setcookie": true,
	"connectionstring": true, "dsn": false, // a DSN is scanned as text instead (password-in-url)
}

// sensitiveSuffixes make "db_password", "stripe_api_key", "github_token" sensitive too.
var sensitiveSuffixes = []string{"password", "passwd", "passphrase", "secret", "apikey", "privatekey", "accesstoken", "authtoken", "secretkey", "accesskey", "apitoken"}

// IsSensitiveKey reports whether an object key names a credential.
func IsSensitiveKey(k string) bool {
	if len(k) > 64 {
		return false
	}
	n := strings.Map(func(r rune) rune {
		switch r {
		case '-', '_', '.', ' ':
			return -1
		}
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, k)
	if sensitiveKeys[n] {
		return true
	}
	for _, s := range sensitiveSuffixes {
		if strings.HasSuffix(n, s) {
			return true
		}
	}
	return false
}

// Separators between a key and its value in "key = value", "key: value",
// "\"key\": \"value\"" and JSON escaped inside a string ("\\\"key\\\":\\\"value\\\"").
const assign = `["'\\]{0,3}\s*(?::=|=>|[:=])\s*["'\\]{0,3}`

// DefaultRules returns the built-in rule set, most specific first. The prefix that names
// the kind of credential is outside the secret group, so masking keeps it. Unless a rule
// sets Before, its match starts at its keyword, where the scanner anchors it.
func DefaultRules() []Rule {
	re := regexp.MustCompile
	return []Rule{
		// Cloud providers.
		{ID: "aws-access-key-id", Description: "AWS access key ID",
			Regexp: re(`(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)([A-Z2-7]{16})\b`), Keywords: []string{"akia", "asia", "abia", "acca", "aroa", "aida"}, WordStart: true},
		{ID: "aws-secret-access-key", Description: "AWS secret access key in an assignment",
			Regexp:   re(`(?i)aws[a-z0-9_.\-]*(?:secret|private)[a-z0-9_.\-]*` + assign + `([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)`),
			Keywords: []string{"aws"}, MinEntropy: 3.5, Assign: true},
		{ID: "gcp-api-key", Description: "Google Cloud API key",
			Regexp: re(`AIza([0-9A-Za-z_\-]{35})(?:[^0-9A-Za-z_\-]|$)`), Keywords: []string{"aiza"}, WordStart: true},
		{ID: "gcp-service-account-key-id", Description: "Google service account private key id",
			Regexp: re(`"private_key_id"\s*:\s*"([0-9a-f]{40})"`), Keywords: []string{`"private_key_id"`}},
		{ID: "gcp-oauth-client-secret", Description: "Google OAuth client secret",
			Regexp: re(`GOCSPX-([0-9A-Za-z_\-]{28})`), Keywords: []string{"gocspx-"}, WordStart: true},
		{ID: "gcp-oauth-access-token", Description: "Google OAuth access token",
			Regexp: re(`ya29\.([0-9A-Za-z_\-]{30,})`), Keywords: []string{"ya29."}, WordStart: true},
		{ID: "azure-storage-account-key", Description: "Azure storage account key in a connection string",
			Regexp: re(`(?i)AccountKey=([A-Za-z0-9+/]{86}==)`), Keywords: []string{"accountkey="}},
		{ID: "azure-shared-access-key", Description: "Azure Service Bus / Event Hubs / IoT shared access key",
			Regexp: re(`(?i)SharedAccessKey=([A-Za-z0-9+/]{42,44}=?)`), Keywords: []string{"sharedaccesskey="}},
		{ID: "azure-sas-signature", Description: "Azure shared access signature",
			Regexp: re(`[?&]sig=([A-Za-z0-9%+/]{30,}(?:%3D|=){0,2})`), Keywords: []string{"?sig=", "&sig="}, MinEntropy: 3.5},
		{ID: "azure-ad-client-secret", Description: "Microsoft Entra ID (Azure AD) client secret",
			Regexp: re(`([A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.\-]{31,34})(?:[^A-Za-z0-9_~.\-]|$)`), Keywords: []string{"q~"}, Before: 4, WordStart: true},
		{ID: "digitalocean-token", Description: "DigitalOcean token",
			Regexp: re(`do[opr]_v1_([a-f0-9]{64})\b`), Keywords: []string{"doo_v1_", "dop_v1_", "dor_v1_"}, WordStart: true},

		// Source forges and CI.
		{ID: "github-token", Description: "GitHub personal access, OAuth, app or refresh token",
			Regexp: re(`(?:ghp|gho|ghu|ghs|ghr)_([A-Za-z0-9]{36,})\b`), Keywords: []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_"}, WordStart: true},
		{ID: "github-fine-grained-token", Description: "GitHub fine-grained personal access token",
			Regexp: re(`github_pat_([A-Za-z0-9_]{60,})\b`), Keywords: []string{"github_pat_"}, WordStart: true},
		{ID: "gitlab-token", Description: "GitLab personal, deploy, trigger, runner or agent token",
			Regexp: re(`gl(?:pat|dt|ptt|rt|ft|oas|cbt|imt|agent|soat|ffct)-([0-9A-Za-z_\-]{20,})`), WordStart: true,
			Keywords: []string{"glpat-", "gldt-", "glptt-", "glrt-", "glft-", "gloas-", "glcbt-", "glimt-", "glagent-", "glsoat-", "glffct-"}},
		{ID: "gitlab-runner-registration-token", Description: "GitLab runner registration token",
			Regexp: re(`GR1348941([0-9A-Za-z_\-]{20,})`), Keywords: []string{"gr1348941"}, WordStart: true},
		{ID: "npm-token", Description: "npm access token",
			Regexp: re(`npm_([A-Za-z0-9]{36})\b`), Keywords: []string{"npm_"}, WordStart: true},
		{ID: "pypi-token", Description: "PyPI upload token",
			Regexp: re(`pypi-(AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,})`), Keywords: []string{"pypi-ageichlwas5vcmc"}, WordStart: true},

		// Messaging, payments, AI providers, SaaS.
		{ID: "slack-token", Description: "Slack bot, user, app-level or configuration token",
			Regexp: re(`(?:xox[abposre]|xapp)-([0-9A-Za-z\-]{10,})`), Keywords: []string{"xox", "xapp-"}, WordStart: true},
		{ID: "slack-webhook", Description: "Slack incoming webhook URL",
			Regexp: re(`https://hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9+/_\-]{20,})`), Keywords: []string{"https://hooks.slack.com/"}},
		{ID: "stripe-key", Description: "Stripe secret or restricted key",
			Regexp: re(`(?:sk|rk)_(?:live|test)_([0-9A-Za-z]{20,})\b`), Keywords: []string{"sk_live_", "sk_test_", "rk_live_", "rk_test_"}, WordStart: true},
		{ID: "stripe-webhook-secret", Description: "Stripe webhook signing secret",
			Regexp: re(`whsec_([A-Za-z0-9]{24,})\b`), Keywords: []string{"whsec_"}, WordStart: true},
		{ID: "anthropic-key", Description: "Anthropic API or admin key",
			Regexp: re(`sk-ant-[a-z]{2,8}\d{0,3}-([A-Za-z0-9_\-]{32,})`), Keywords: []string{"sk-ant-"}, WordStart: true},
		{ID: "openai-key", Description: "OpenAI project, service account, admin or legacy key",
			Regexp:   re(`sk-(?:(?:proj|svcacct|admin)-([A-Za-z0-9_\-]{40,})|([A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}))`),
			Keywords: []string{"sk-"}, WordStart: true},
		{ID: "huggingface-token", Description: "Hugging Face access token",
			Regexp: re(`hf_([A-Za-z0-9]{34,40})\b`), Keywords: []string{"hf_"}, WordStart: true},
		{ID: "sendgrid-key", Description: "SendGrid API key",
			Regexp: re(`SG\.([A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43})\b`), Keywords: []string{"sg."}, WordStart: true},
		{ID: "twilio-api-key", Description: "Twilio API key SID",
			Regexp: re(`SK([0-9a-f]{32})\b`), Keywords: []string{"sk"}, WordStart: true},
		{ID: "shopify-token", Description: "Shopify access token or shared secret",
			Regexp: re(`shp(?:at|ca|pa|ss)_([a-fA-F0-9]{32})\b`), Keywords: []string{"shpat_", "shpca_", "shppa_", "shpss_"}, WordStart: true},
		{ID: "databricks-token", Description: "Databricks personal access token",
			Regexp: re(`dapi([a-f0-9]{32})(?:-\d)?\b`), Keywords: []string{"dapi"}, WordStart: true},

		// Formats.
		{ID: "private-key", Description: "PEM or OpenSSH private key",
			Regexp:   re(`-----BEGIN[ A-Z0-9]{0,20}PRIVATE KEY(?: BLOCK)?-----((?s:.){16,}?)-----END[ A-Z0-9]{0,20}PRIVATE KEY(?: BLOCK)?-----`),
			Keywords: []string{"-----begin"}, MaxLen: 1 << 16},
		{ID: "private-key-truncated", Description: "PEM private key header followed by key material, without its footer",
			Regexp:   re(`-----BEGIN[ A-Z0-9]{0,20}PRIVATE KEY(?: BLOCK)?-----((?:[A-Za-z0-9+/=\s]|\\n|\\r){32,})`),
			Keywords: []string{"-----begin"}, MaxLen: 1 << 16},
		{ID: "jwt", Description: "JSON Web Token (the header is kept, payload and signature masked)",
			Regexp: re(`eyJ[A-Za-z0-9_\-]{8,}\.(eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})`), Keywords: []string{"eyj"}, WordStart: true},
		{ID: "password-in-url", Description: "password in the user info of a URL",
			Regexp: re(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@"'<>\\]+:([^\s/?#@"'<>\\]+)@`), Keywords: []string{"://"}, Before: 24,
			SkipPlaceholders: true},
		{ID: "basic-auth-header", Description: "HTTP Basic or Bearer credentials in an Authorization header",
			Regexp:   re(`(?i)authorization` + assign + `(?:basic|bearer|token)\s+([A-Za-z0-9._~+/\-]{8,}=*)`),
			Keywords: []string{"authorization"}, WordStart: true, SkipPlaceholders: true, Assign: true},

		// Generic assignments, last: the specific rules above win on overlap. The key may
		// carry a prefix (db_password, stripe_api_key): the match starts at the keyword.
		{ID: "generic-password", Description: "password assigned in code, config or a command line",
			Regexp: re(`(?i)(?:password|passwd|pwd|passphrase)["'\\]{0,3}\s*(?::=|=>|[:=])\s*` +
				`(?:\\?"([^"\\\s]{4,})\\?"|'([^'\s]{4,})'|([^\s"'\\,;&<>{}]{4,}))`),
			Keywords:         []string{"passw", "pwd", "passphrase"},
			SkipPlaceholders: true, Assign: true},
		{ID: "generic-api-key", Description: "high-entropy value assigned to a key, secret or token",
			Regexp:     re(`(?i)(?:api[_.\-]?key|secret|token|access[_.\-]?key|auth[_.\-]?key|credential)` + assign + `([A-Za-z0-9_\-+/=.~]{16,})`),
			Keywords:   []string{"api", "secret", "token", "access", "auth", "credential"},
			MinEntropy: 3.5, SkipPlaceholders: true, Assign: true},
	}
}
