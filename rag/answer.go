package rag

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// AnswerSystemPrompt asks a model to answer from the given passages only, with citations.
const AnswerSystemPrompt = "Answer the question using only the numbered passages. Cite the passages you use as [1], [2], ... right after the statements they support. If the passages do not contain the answer, say so."

// AnswerPrompt lays out a question and its retrieved passages, numbered from 1.
func AnswerPrompt(question string, hits []Hit) string {
	var b strings.Builder
	b.WriteString("Passages:\n")
	for i, h := range hits {
		src := h.Doc
		if t := h.Meta["title"]; t != "" {
			src = t
		}
		fmt.Fprintf(&b, "\n[%d] (%s)\n%s\n", i+1, src, h.Text)
	}
	b.WriteString("\nQuestion: " + question + "\n")
	return b.String()
}

var citation = regexp.MustCompile(`\[(\d{1,3})\]`)

// Cited returns the 0-based indexes of the passages an answer cites as [n], in order of
// first citation, ignoring numbers outside 1..n.
func Cited(answer string, n int) []int {
	var out []int
	seen := map[int]bool{}
	for _, m := range citation.FindAllStringSubmatch(answer, -1) {
		i, _ := strconv.Atoi(m[1])
		if i < 1 || i > n || seen[i] {
			continue
		}
		seen[i] = true
		out = append(out, i-1)
	}
	return out
}
