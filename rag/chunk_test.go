package rag

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestSplit(t *testing.T) {
	code := "```go\nfunc main() {\n\n\tprintln(1)\n}\n```"
	for _, tc := range []struct {
		name string
		in   string
		max  int
		want []string
	}{
		{"empty", "", 100, nil},
		{"blank", " \n\n\t\n", 100, nil},
		{"one paragraph", "Hello world.", 100, []string{"Hello world."}},
		{"paragraphs packed", "One.\n\nTwo.\n\n\nThree.", 100, []string{"One.\n\nTwo.\n\nThree."}},
		{"paragraphs split where they do not fit", "aaaa aaaa aaaa.\n\nbbbb bbbb bbbb.", 20, []string{"aaaa aaaa aaaa.", "bbbb bbbb bbbb."}},
		{"code block kept whole despite blank line", "Intro.\n\n" + code + "\n\nAfter.", 50, []string{"Intro.\n\n" + code, "After."}},
		{"code block alone when too big to pack", "Intro text here.\n\n" + code, 45, []string{"Intro text here.", code}},
		{"long code cut between lines", "```\nline one\nline two\nline three\n```", 20, []string{"```\nline one", "line two\nline three", "```"}},
		{"long paragraph cut at sentences", "First sentence. Second sentence. Third one.", 20, []string{"First sentence.", "Second sentence.", "Third one."}},
		{"long word cut hard", strings.Repeat("x", 40), 16, []string{strings.Repeat("x", 16), strings.Repeat("x", 16), strings.Repeat("x", 8)}},
		{"runes not cut", strings.Repeat("é", 10), 16, []string{strings.Repeat("é", 8), strings.Repeat("é", 2)}},
		{"unclosed fence is code to the end", "```\na\n\nb", 100, []string{"```\na\n\nb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Split(tc.in, tc.max)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Split(%q, %d) mismatch (-want +got):\n%s", tc.in, tc.max, diff)
			}
			checkSplit(t, tc.in, tc.max, got)
		})
	}
}

func stripSpace(s string) string {
	// Byte-preserving: an invalid byte stays itself (strings.Map would turn it into
	// U+FFFD), so two stray bytes that meet once the space between them is gone
	// compare equal on both sides.
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !(n > 1 || r != utf8.RuneError) || !unicode.IsSpace(r) {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// checkSplit asserts the chunker's promises: chunks are non-empty, trimmed, within
// max bytes, keep every non-space byte in order, and never cut a valid rune.
func checkSplit(t *testing.T, in string, max int, chunks []string) {
	t.Helper()
	max = maxOf(max)
	for i, c := range chunks {
		if c == "" || strings.TrimSpace(c) != c {
			t.Fatalf("chunk %d %q is empty or untrimmed", i, c)
		}
		if len(c) > max {
			t.Fatalf("chunk %d has %d bytes, max %d", i, len(c), max)
		}
		if utf8.ValidString(in) && !utf8.ValidString(c) {
			t.Fatalf("chunk %d %q cuts a rune", i, c)
		}
	}
	if got, want := stripSpace(strings.Join(chunks, "")), stripSpace(in); got != want {
		t.Fatalf("chunks lose or reorder content:\n got %q\nwant %q", got, want)
	}
}

func maxOf(m int) int {
	if m <= 0 {
		m = DefaultChunkChars
	}
	return max(m, minChunkChars)
}

func FuzzSplit(f *testing.F) {
	f.Add("Hello.\n\n```go\nx := 1\n\ny\n```\n\nBye. Now.", 20)
	f.Add(strings.Repeat("word ", 100), 0)
	f.Add("~~~\n\xff\xfe\n~~~", 3)
	f.Add("a\r\n\r\nb", 16)
	f.Add("00\xd3 \xba"+strings.Repeat("0", 70), 3)
	f.Fuzz(func(t *testing.T, in string, max int) {
		if max > 1<<16 || max < -1<<16 {
			return
		}
		checkSplit(t, in, max, Split(in, max))
	})
}
