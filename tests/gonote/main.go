// Command gonote opens a signed note with the Go reference implementation, golang.org/x/mod/sumdb/note.
//
// Usage: gonote VERIFIER_KEY... < NOTE
//
// It prints the note as JSON (its text, the names of the signatures it verified and of those it
// could not) and exits 0, or prints the library's error and exits 1.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"golang.org/x/mod/sumdb/note"
)

func main() {
	var verifiers []note.Verifier
	for _, key := range os.Args[1:] {
		verifier, err := note.NewVerifier(key)
		if err != nil {
			fail(err)
		}
		verifiers = append(verifiers, verifier)
	}
	msg, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	opened, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fail(err)
	}
	names := func(sigs []note.Signature) []string {
		out := []string{}
		for _, sig := range sigs {
			out = append(out, sig.Name)
		}
		return out
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"text": opened.Text, "verified": names(opened.Sigs), "unverified": names(opened.UnverifiedSigs),
	})
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
