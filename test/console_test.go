package test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// chromium finds Debian's Chromium. Without it the test fails when SYMBI_REQUIRE_CHROMIUM
// is set (CI: scripts/test.sh sets it, .ci/chromium.sh installs the package), and is
// skipped, saying why, otherwise.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SYMBI_REQUIRE_CHROMIUM") != "" {
		t.Fatal("Chromium is required (SYMBI_REQUIRE_CHROMIUM is set) but not installed: run .ci/chromium.sh")
	}
	t.Skip("Chromium is not installed (.ci/chromium.sh); set SYMBI_REQUIRE_CHROMIUM=1 to fail instead")
	return ""
}

const (
	consoleToken = "console-e2e-token-0123456789"
	shotW, shotH = 1280, 900
)

// browser starts headless Chromium with a fresh profile; JavaScript is off until
// setScripts(true).
func browser(t *testing.T) (ctx context.Context, setScripts func(on bool)) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // tests may run as root, where Chromium's sandbox refuses to start
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(shotW, shotH),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, tcancel := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { tcancel(); cancel(); acancel() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(shotW, shotH)); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	setScripts = func(on bool) {
		t.Helper()
		if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: !on}); err != nil {
			t.Fatalf("set script execution: %v", err)
		}
	}
	setScripts(false)
	return ctx, setScripts
}

// screenshot captures the viewport, checks it is a PNG of the window's size that is not
// blank, and keeps it beside the test's files.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG (%d bytes): %v", name, len(b), err)
	}
	if got := img.Bounds().Size(); got != image.Pt(shotW, shotH) {
		t.Errorf("screenshot %s is %v, want %dx%d", name, got, shotW, shotH)
	}
	// A rendered page has several colours: the dark header, the text, the background.
	colours := map[[4]uint32]bool{}
	for y := 0; y < shotH; y += 7 {
		for x := 0; x < shotW; x += 7 {
			r, g, bl, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, bl, a}] = true
		}
	}
	if len(colours) < 3 {
		t.Errorf("screenshot %s is blank (%d colours)", name, len(colours))
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s: %s (%d bytes)", name, p, len(b))
}

// text is the text of the first element matching sel.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate %s: %v", url, err)
	}
}

// TestConsoleBrowser drives the web console in headless Chromium against the built
// binary: sign in with a token, list the upstreams, approve a pending tool with
// JavaScript off (a plain form post), see the tool listed to an MCP client, find the
// decision in the audit trail, and watch the live audit view (JavaScript on) show a new
// call. Each step's page is checked by its DOM text and a screenshot.
func TestConsoleBrowser(t *testing.T) {
	ctx, setScripts := browser(t)
	shots := os.Getenv("SYMBI_SCREENSHOT_DIR") // kept for a look (CI artifacts); default: the test's temporary dir
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := filepath.Join(t.TempDir(), "spec", "tools.json")
	if err := os.Mkdir(filepath.Dir(spec), 0o700); err != nil {
		t.Fatal(err)
	}
	writeSpec(t, spec, mutableSpec{Description: "Probe: reports the weather."})
	up := fmt.Sprintf("[[upstreams]]\nname = \"mut\"\nprefix = \"mut\"\ncommand = [%q, \"-file\", %q]\nschemapin = { first_seen = \"pending\" }\n", mutableServer(t), spec)
	cfg := writeConfig(t, fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"operator\"\n\n%s", consoleToken, up))
	s := serve(t, cfg)
	base := "http://" + s.addr
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: base + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{token: consoleToken, next: http.DefaultTransport}}}, nil)
	if listedNow(t, cs, "mut__probe") {
		t.Fatal("a first-seen tool is listed before approval")
	}

	// Not signed in: what /mcp answers, with a way to the sign-in form.
	navigate(t, ctx, base+"/ui/")
	if got := text(t, ctx, "h1"); got != "Not signed in" {
		t.Errorf("unauthenticated /ui/ heading = %q", got)
	}
	navigate(t, ctx, base+"/ui/login")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#token"), consoleToken),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitReady(chromedp.CSS("#upstreams")),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	if got := text(t, ctx, "#identity"); got != "operator" {
		t.Errorf("signed in as %q, want operator", got)
	}
	row := text(t, ctx, "#upstreams tbody tr")
	for _, want := range []string{"mut", "stdio", "up"} {
		if !strings.Contains(row, want) {
			t.Errorf("upstreams row %q lacks %q", row, want)
		}
	}
	if n := text(t, ctx, ".notice"); !strings.Contains(n, "2 tool definition(s) await approval") {
		t.Errorf("upstreams notice = %q", n)
	}
	screenshot(t, ctx, shots, "1-upstreams")

	// Approve mut/probe with JavaScript off: a plain form post.
	navigate(t, ctx, base+"/ui/pending")
	change := text(t, ctx, "#change-mut-probe")
	for _, want := range []string{"mut / probe", "new", "Probe: reports the weather.", "Approve", "Reject"} {
		if !strings.Contains(change, want) {
			t.Errorf("pending change %q lacks %q", change, want)
		}
	}
	screenshot(t, ctx, shots, "2-pending")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#change-mut-probe button.approve")),
		chromedp.WaitReady(chromedp.CSS("#done")),
	); err != nil {
		t.Fatalf("approve: %v", err)
	}
	if got := text(t, ctx, "#done"); got != "approved mut/probe" {
		t.Errorf("after approving: %q", got)
	}
	body := text(t, ctx, "main")
	if strings.Contains(body, "mut / probe") || !strings.Contains(body, "mut / crash") {
		t.Errorf("pending page after approving probe:\n%s", body)
	}
	screenshot(t, ctx, shots, "3-approved")
	waitFor(t, 10*time.Second, "the approved tool to be listed", func() bool { return listedNow(t, cs, "mut__probe") })
	if listedNow(t, cs, "mut__crash") {
		t.Error("mut__crash is listed without approval")
	}

	// The decision is in the audit trail, under the console identity. JavaScript is still
	// off: the live view's script has not run.
	navigate(t, ctx, base+"/ui/audit?type=tool.approved")
	rec := text(t, ctx, "#audit tbody tr")
	for _, want := range []string{"tool.approved", "operator", "mut", "probe", "allow"} {
		if !strings.Contains(rec, want) {
			t.Errorf("audit row %q lacks %q", rec, want)
		}
	}
	if got := text(t, ctx, "#live"); !strings.HasPrefix(got, "With JavaScript") {
		t.Errorf("live view changed with JavaScript off: %q", got)
	}
	screenshot(t, ctx, shots, "4-audit")

	// With JavaScript, the live view adds a new call as it is recorded.
	setScripts(true)
	navigate(t, ctx, base+"/ui/audit?identity=operator&type=call")
	if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS("#audit"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the live view's script to connect", func() bool {
		return strings.HasPrefix(text(t, ctx, "#live"), "Live:")
	})
	if got, isErr := callText(t, cs, "mut__probe", map[string]any{}); isErr || !strings.Contains(got, "Probe") {
		t.Fatalf("mut__probe = %q (error %v)", got, isErr)
	}
	if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS("#audit tbody tr.new"))); err != nil {
		t.Fatalf("the live view shows no new row: %v", err)
	}
	live := text(t, ctx, "#audit tbody tr.new")
	if !strings.Contains(live, "mut__probe") || !strings.Contains(live, "tools/call") {
		t.Errorf("live row = %q", live)
	}
	screenshot(t, ctx, shots, "5-live")
}
