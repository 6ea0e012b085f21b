package rag

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultChunkChars is the chunk size Split uses when given 0.
const DefaultChunkChars = 1200

// minChunkChars keeps a hard split from cutting below a few runes.
const minChunkChars = 16

// block is a unit the chunker keeps whole when it can: a paragraph or a fenced code block.
type block struct {
	text string
	code bool
}

// Split cuts text into chunks of at most maxChars bytes (0: DefaultChunkChars) that
// follow the document's structure: paragraphs (separated by blank lines) and fenced code
// blocks (``` or ~~~) are kept whole and packed together while they fit. A paragraph
// that is too long is cut at sentence ends, then at spaces; a code block that is too long
// is cut between lines; a line or word longer than a chunk is cut at a rune boundary.
// Whitespace at the edges of chunks is dropped and nothing else is: the chunks, read in
// order, hold every non-space byte of text.
func Split(text string, maxChars int) []string {
	if maxChars <= 0 {
		maxChars = DefaultChunkChars
	}
	maxChars = max(maxChars, minChunkChars)
	var out []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for _, b := range blocks(text) {
		t := strings.TrimSpace(b.text)
		if t == "" {
			continue
		}
		if cur.Len() > 0 && cur.Len()+2+len(t) <= maxChars {
			cur.WriteString("\n\n")
			cur.WriteString(t)
			continue
		}
		flush()
		if len(t) <= maxChars {
			cur.WriteString(t)
			continue
		}
		var parts []string
		if b.code {
			parts = pack(splitAfter(t, func(r rune) bool { return r == '\n' }), maxChars)
		} else {
			parts = pack(splitSentences(t), maxChars)
		}
		for _, p := range parts {
			if s := strings.TrimSpace(p); s != "" {
				out = append(out, s)
			}
		}
	}
	flush()
	return out
}

// blocks splits text into paragraphs and fenced code blocks, in order.
func blocks(text string) []block {
	var out []block
	var cur strings.Builder
	fence := "" // the open fence marker, "" outside code
	emit := func(code bool) {
		if cur.Len() > 0 {
			out = append(out, block{text: cur.String(), code: code})
			cur.Reset()
		}
	}
	for _, line := range strings.SplitAfter(text, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case fence != "":
			cur.WriteString(line)
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				emit(true)
				fence = ""
			}
		case strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~"):
			emit(false)
			fence = trimmed[:3]
			cur.WriteString(line)
		case trimmed == "":
			emit(false)
			cur.WriteString(line) // whitespace only; trimmed away later
			emit(false)
		default:
			cur.WriteString(line)
		}
	}
	emit(fence != "")
	return out
}

// splitSentences cuts a paragraph after sentence ends and line breaks.
func splitSentences(t string) []string {
	var out []string
	start := 0
	for i, r := range t {
		if r == '\n' || (r == '.' || r == '?' || r == '!') && i+1 < len(t) && t[i+1] == ' ' {
			out = append(out, t[start:i+1])
			start = i + 1
		}
	}
	if start < len(t) {
		out = append(out, t[start:])
	}
	return out
}

// splitAfter cuts s after every rune for which cut is true.
func splitAfter(s string, cut func(rune) bool) []string {
	var out []string
	start := 0
	for i, r := range s {
		if cut(r) {
			w := utf8.RuneLen(r)
			if w < 0 {
				w = 1
			}
			out = append(out, s[start:i+w])
			start = i + w
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// pack joins consecutive pieces into chunks of at most maxChars bytes, cutting a piece
// that alone is too long at spaces, then at rune boundaries.
func pack(pieces []string, maxChars int) []string {
	var out []string
	var cur strings.Builder
	for _, p := range pieces {
		if cur.Len()+len(p) <= maxChars {
			cur.WriteString(p)
			continue
		}
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
		if len(p) <= maxChars {
			cur.WriteString(p)
			continue
		}
		for _, w := range splitAfter(p, unicode.IsSpace) {
			if cur.Len()+len(w) > maxChars && cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
			for len(w) > maxChars {
				n := maxChars
				for n > 0 && !utf8.RuneStart(w[n]) {
					n--
				}
				if n == 0 {
					n = maxChars
				}
				out = append(out, w[:n])
				w = w[n:]
			}
			cur.WriteString(w)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
